//! Capability errors as job errors: [`JobError::Retry`] when a later attempt may succeed,
//! [`JobError::Fail`] when it cannot. One function per capability.

use crate::bindings::{JobError, kv, llm};

pub fn kv(error: kv::Error) -> JobError {
    match error {
        kv::Error::Invalid(reason) => {
            JobError::Fail(format!("kv refused the key or value: {reason}"))
        }
        // Keys expire by TTL, so room may free up before the attempts run out.
        kv::Error::QuotaExceeded(reason) => JobError::Retry(format!("kv quota exceeded: {reason}")),
        kv::Error::Unavailable(reason) => JobError::Retry(format!("kv unavailable: {reason}")),
    }
}

pub fn llm(error: llm::Error) -> JobError {
    match error {
        llm::Error::InvalidRequest(reason) => {
            JobError::Fail(format!("llm refused the request: {reason}"))
        }
        llm::Error::Provider(llm::ProviderError { status, message }) => JobError::Retry(format!(
            "llm provider failed with status {status}: {message}"
        )),
        llm::Error::Unavailable(reason) => JobError::Retry(format!("llm unavailable: {reason}")),
        llm::Error::Timeout => JobError::Retry("llm provider timed out".to_owned()),
        // A budget refills with time: a later attempt may fit.
        llm::Error::QuotaExceeded(reason) => JobError::Retry(format!("llm quota: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retried(error: JobError) -> bool {
        matches!(error, JobError::Retry(_))
    }

    #[test]
    fn only_invalid_requests_fail_for_good() {
        assert!(!retried(llm(llm::Error::InvalidRequest("x".to_owned()))));
        assert!(retried(llm(llm::Error::Timeout)));
        assert!(retried(llm(llm::Error::Unavailable("x".to_owned()))));
        assert!(retried(llm(llm::Error::Provider(llm::ProviderError {
            status: 500,
            message: "x".to_owned()
        }))));
    }

    #[test]
    fn kv_outages_are_retried() {
        assert!(retried(kv(kv::Error::Unavailable("x".to_owned()))));
        assert!(retried(kv(kv::Error::QuotaExceeded("x".to_owned()))));
        assert!(!retried(kv(kv::Error::Invalid("x".to_owned()))));
    }
}
