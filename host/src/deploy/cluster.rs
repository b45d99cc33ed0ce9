//! Deployments shared by every host on one Redis: records and bytes stored there, and a
//! pub/sub notification so the other hosts fetch a new version at once.
//!
//! Keys: `PREFIX:{deploy}:names` (a set), `PREFIX:{deploy}:record:NAME` (the JSON record),
//! `PREFIX:{deploy}:blob:HASH` (the bytes). Channel: `PREFIX:{deploy}:notify`, message =
//! the name. `PREFIX` is `[redis] prefix` (`llmchat`). They share the hash tag `{deploy}` on
//! purpose: a deploy writes the bytes, the record and the name set in one transaction and
//! notifies in it, which a Redis Cluster allows only inside one slot. Deploys are rare and
//! small in number, so that one slot is never hot.
//! The notification only says "look"; the record in Redis is the truth, so a host that
//! missed messages (disconnected) reads every record when it subscribes again.

use std::sync::Arc;

use redis::AsyncCommands;

use super::store::ComponentRecord;
use crate::redis::{RedisError, RedisPool};

/// The Redis side of the deploy store.
pub struct ClusterStore {
    pool: Arc<RedisPool>,
}

impl ClusterStore {
    pub fn new(pool: Arc<RedisPool>) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Arc<RedisPool> {
        &self.pool
    }

    /// The channel every host of this application listens to for deploys.
    pub fn channel(&self) -> String {
        self.pool.key("{deploy}:notify")
    }

    fn names_key(&self) -> String {
        self.pool.key("{deploy}:names")
    }

    fn record_key(&self, name: &str) -> String {
        self.pool.key(format_args!("{{deploy}}:record:{name}"))
    }

    fn blob_key(&self, hash: &str) -> String {
        self.pool.key(format_args!("{{deploy}}:blob:{hash}"))
    }

    /// Stores the bytes (once per hash) and the record, then tells every host.
    pub async fn publish(
        &self,
        record: &ComponentRecord,
        blob: Option<(&str, &[u8])>,
    ) -> Result<(), RedisError> {
        let json = serde_json::to_string(record)
            .map_err(|e| RedisError::Command(format!("encoding the record: {e}")))?;
        let name = record.name.clone();
        let blob = blob.map(|(h, b)| (self.blob_key(h), b.to_vec()));
        let (record_key, names_key, channel) =
            (self.record_key(&name), self.names_key(), self.channel());
        let publish = self.pool.publish_command();
        let names = names_key.clone();
        self.pool
            .run_durable(&names, |mut c| async move {
                let mut pipe = redis::pipe();
                pipe.atomic();
                if let Some((key, bytes)) = blob {
                    pipe.cmd("SET").arg(key).arg(bytes).arg("NX").ignore();
                }
                pipe.cmd("SET").arg(record_key).arg(json).ignore();
                pipe.cmd("SADD").arg(names_key).arg(&name).ignore();
                pipe.cmd(publish).arg(channel).arg(&name).ignore();
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    pub async fn record(&self, name: &str) -> Result<Option<ComponentRecord>, RedisError> {
        let key = self.record_key(name);
        let json: Option<String> = self
            .pool
            .run(|mut c| async move { c.get(key).await })
            .await?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| RedisError::Command(format!("deployment record of `{name}`: {e}")))
        })
        .transpose()
    }

    pub async fn names(&self) -> Result<Vec<String>, RedisError> {
        let key = self.names_key();
        let mut names: Vec<String> = self
            .pool
            .run(|mut c| async move { c.smembers(key).await })
            .await?;
        names.sort();
        Ok(names)
    }

    pub async fn blob(&self, hash: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let key = self.blob_key(hash);
        self.pool.run(|mut c| async move { c.get(key).await }).await
    }
}
