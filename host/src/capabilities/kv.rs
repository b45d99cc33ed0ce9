//! `llmchat:runtime/kv`: the component's namespaced view of the shared [`KvStore`].
//!
//! [`KvStore`]: crate::kv::KvStore

use std::time::Duration;

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::kv::{self, Error};
use crate::kv::KvError;

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
        Ok(self
            .services
            .kv
            .get(&self.component.kv_namespace, &key)
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
        Ok(self
            .services
            .kv
            .set(&self.component.kv_namespace, &key, value, ttl)
            .await
            .map_err(to_wit))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        Ok(self
            .services
            .kv
            .delete(&self.component.kv_namespace, &key)
            .await
            .map_err(to_wit))
    }

    async fn exists(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        Ok(self
            .services
            .kv
            .exists(&self.component.kv_namespace, &key)
            .await
            .map_err(to_wit))
    }

    async fn increment(&mut self, key: String, delta: i64) -> wasmtime::Result<Result<i64, Error>> {
        let kv = &self.services.kv;
        Ok(kv
            .increment(&self.component.kv_namespace, &key, delta)
            .await
            .map_err(to_wit))
    }
}
