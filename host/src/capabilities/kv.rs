//! `llmchat:runtime/kv`: the component's namespaced view of the shared [`KvStore`]. Each
//! call is a `kv <operation>` span when tracing is on.
//!
//! [`KvStore`]: crate::kv::KvStore

use std::time::Duration;

use tracing::Instrument;

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::kv::{self, Error};
use crate::kv::KvError;

/// `call` inside a span for `operation`, failed when the call failed.
async fn traced<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    let span = crate::telemetry::spans::kv(operation);
    let result = call.instrument(span.clone()).await;
    if let Err(e) = &result {
        let kind = match e {
            KvError::Invalid(_) => "invalid",
            KvError::QuotaExceeded(_) => "quota_exceeded",
            KvError::Unavailable(_) => "unavailable",
        };
        crate::telemetry::spans::record_error(&span, kind);
    }
    result
}

/// The one mapping from host kv errors to the WIT error.
fn to_wit(e: KvError) -> Error {
    match e {
        KvError::Invalid(m) => Error::Invalid(m),
        KvError::QuotaExceeded(m) => Error::QuotaExceeded(m),
        KvError::Unavailable(m) => Error::Unavailable(m),
    }
}

impl kv::Host for &mut CapabilityCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let kv = &self.services.kv;
        Ok(traced("get", kv.get(&self.component.kv_namespace, &key))
            .await
            .map_err(to_wit))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let ttl = ttl_ms.map(Duration::from_millis);
        let kv = &self.services.kv;
        Ok(traced(
            "set",
            kv.set(&self.component.kv_namespace, &key, value, ttl),
        )
        .await
        .map_err(to_wit))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        let kv = &self.services.kv;
        Ok(
            traced("delete", kv.delete(&self.component.kv_namespace, &key))
                .await
                .map_err(to_wit),
        )
    }

    async fn exists(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        let kv = &self.services.kv;
        Ok(
            traced("exists", kv.exists(&self.component.kv_namespace, &key))
                .await
                .map_err(to_wit),
        )
    }

    async fn increment(&mut self, key: String, delta: i64) -> wasmtime::Result<Result<i64, Error>> {
        let kv = &self.services.kv;
        let increment = kv.increment(&self.component.kv_namespace, &key, delta);
        Ok(traced("increment", increment).await.map_err(to_wit))
    }
}
