//! A heartbeat key in a JetStream key-value bucket whose values expire: a process that is
//! alive puts its key every few seconds; one that stops cleanly deletes it; one that dies (or
//! is cut off) leaves it to the bucket's `max_age`. Readers list the live keys with
//! [`crate::lab::read_bucket`] (no consumer).
//!
//! The bucket is opened (and created, in memory) by [`crate::kv::open`].

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;

use crate::client::Bus;

/// A heartbeat failed: JetStream is missing, unreachable or refused.
#[derive(Debug, thiserror::Error)]
#[error("heartbeat bucket {bucket}: {what}: {message}")]
pub struct HeartbeatError {
    /// The bucket.
    pub bucket: String,
    /// What was being done.
    pub what: &'static str,
    /// The cause, as the client reported it.
    pub message: String,
}

/// How a heartbeat bucket whose values live `max_age` is created: in memory, replicas as the
/// lab's. Readers that may be first to open it (vm-controller's name directory) use it too.
pub fn bucket_spec(max_age: Duration) -> crate::kv::BucketSpec<'static> {
    crate::kv::BucketSpec {
        description: "banger: live processes' heartbeats",
        storage: jetstream::stream::StorageType::Memory,
        max_age,
        replicas: None,
    }
}

/// One process's key in a heartbeat bucket.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    store: kv::Store,
    bucket: String,
    key: String,
}

impl Heartbeat {
    /// Opens `bucket` (creating it with `max_age` when missing) for key `key`.
    pub async fn open(
        bus: &Bus,
        bucket: &str,
        key: &str,
        max_age: Duration,
    ) -> Result<Self, HeartbeatError> {
        let store = crate::kv::open(bus, bucket, bucket_spec(max_age))
            .await
            .map_err(|message| HeartbeatError {
                bucket: bucket.to_owned(),
                what: "opening the bucket",
                message,
            })?;
        Ok(Self {
            store,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Puts the key with `value`: one beat.
    pub async fn beat(&self, value: Vec<u8>) -> Result<(), HeartbeatError> {
        self.store
            .put(&self.key, value.into())
            .await
            .map(|_| ())
            .map_err(|e| self.error("putting the key", &e))
    }

    /// Deletes the key (a clean stop: readers see it gone at once).
    pub async fn remove(&self) -> Result<(), HeartbeatError> {
        self.store
            .delete(&self.key)
            .await
            .map_err(|e| self.error("deleting the key", &e))
    }

    fn error(&self, what: &'static str, e: &dyn std::fmt::Display) -> HeartbeatError {
        HeartbeatError {
            bucket: self.bucket.clone(),
            what,
            message: e.to_string(),
        }
    }
}
