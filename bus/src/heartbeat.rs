//! A heartbeat key in a JetStream key-value bucket whose values expire: a process that is
//! alive puts its key every few seconds; one that stops cleanly deletes it; one that dies (or
//! is cut off) leaves it to the bucket's `max_age`. Readers list the live keys with
//! [`crate::lab::read_bucket`] (no consumer).
//!
//! The bucket's stream is created directly, with a key-value bucket's settings, for the reason
//! netd's subnet bucket is (async-nats' `create_key_value` cannot parse nats-server 2.9's
//! account info). Its replicas follow the lab's subnet bucket when there is one (a lab's
//! operator chose them there), else 1.

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
        let err = |what: &'static str| {
            move |e: &dyn std::fmt::Display| HeartbeatError {
                bucket: bucket.to_owned(),
                what,
                message: e.to_string(),
            }
        };
        let js = jetstream::new(bus.client().clone());
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => {
                let replicas = lab_replicas(&js, bus.subjects().prefix()).await;
                js.get_or_create_stream(jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some("banger: live processes' heartbeats".to_owned()),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_age,
                    storage: jetstream::stream::StorageType::Memory,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: false,
                    num_replicas: replicas,
                    discard: jetstream::stream::DiscardPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| err("creating the bucket")(&e))?;
                js.get_key_value(bucket)
                    .await
                    .map_err(|e| err("opening the bucket")(&e))?
            }
        };
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

/// The replicas of the lab's subnet bucket, or 1 when there is none (yet).
async fn lab_replicas(js: &jetstream::Context, prefix: &str) -> usize {
    let subnets = banger_proto::net::subnet_bucket(prefix);
    match js.get_stream(format!("KV_{subnets}")).await {
        Ok(mut s) => s
            .info()
            .await
            .map(|i| i.config.num_replicas.max(1))
            .unwrap_or(1),
        Err(_) => 1,
    }
}
