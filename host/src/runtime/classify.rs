//! How a failed invocation is counted: the engine's [`InvocationError`] as the `kind` label
//! of `llmchat_component_errors_total`. Here, above both, so that metrics knows nothing of
//! the engine and the engine nothing of metrics.

use crate::engine::InvocationError;
use crate::metrics::ErrorKind;

impl From<&InvocationError> for ErrorKind {
    fn from(e: &InvocationError) -> Self {
        match e {
            InvocationError::MemoryLimit(_) | InvocationError::ResourceLimit(_) => {
                ErrorKind::Memory
            }
            InvocationError::Timeout(_) => ErrorKind::Timeout,
            InvocationError::Trap(_) | InvocationError::Failed(_) => ErrorKind::Trap,
        }
    }
}
