//! `llmchat:runtime/queue`: enqueue jobs on the manifest's queues.

use std::time::Duration;

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::queue::{self, EnqueueOptions, Error};
use crate::queue::{EnqueueRequest, QueueError};

/// The one mapping from host queue errors to the WIT error.
fn to_wit(e: QueueError) -> Error {
    match e {
        QueueError::UnknownQueue(q) => Error::UnknownQueue(q),
        QueueError::Invalid(m) => Error::Invalid(m),
        QueueError::TooLarge(m) => Error::TooLarge(m),
        QueueError::Full(m) => Error::Full(m),
        QueueError::Unavailable(m) => Error::Unavailable(m),
    }
}

impl queue::Host for &mut CapabilityCtx {
    async fn enqueue(
        &mut self,
        queue: String,
        payload: String,
        options: EnqueueOptions,
    ) -> wasmtime::Result<Result<String, Error>> {
        let request = EnqueueRequest {
            delay: options.delay_ms.map(Duration::from_millis),
            max_attempts: options.max_attempts,
            backoff: options.backoff,
            dedup_key: options.dedup_key,
        };
        let result = self.services.queues.enqueue(&queue, payload, request).await;
        Ok(result.map(|e| e.id().to_string()).map_err(to_wit))
    }
}
