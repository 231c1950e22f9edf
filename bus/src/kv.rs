//! Opening banger's JetStream key-value buckets, creating them when missing.
//!
//! A bucket's stream is created directly, with a key-value bucket's settings (one value per
//! key, `discard: new`, rollups, no message deletes), not with async-nats'
//! `create_key_value`, which first reads the account info that async-nats 0.51 cannot parse
//! from nats-server 2.9 (Debian's). Direct get is off: reads go to the stream leader, never to
//! a replica on a host that is cut off (nats-server 2.9 was seen to leave such direct gets
//! unanswered). Creating an identical stream twice is not an error, so two hosts starting
//! together both succeed. The replicas follow the lab's subnet bucket when there is one (the
//! lab's operator chose them there), else 1; a bucket created before the subnet bucket existed
//! is raised to them later by [`follow_lab_replicas`].

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};

use crate::client::Bus;

/// How a bucket is created when it is missing.
#[derive(Debug, Clone, Copy)]
pub struct BucketSpec<'a> {
    /// The stream's description.
    pub description: &'a str,
    /// Memory (lost with the servers: heartbeats) or file.
    pub storage: StorageType,
    /// How long a value lives; zero: until it is deleted.
    pub max_age: Duration,
    /// Replicas; `None`: as many as the lab's subnet bucket has, else 1.
    pub replicas: Option<usize>,
}

/// Opens key-value bucket `bucket`, creating it as `spec` says when it is missing. The error is
/// the client's message (no JetStream, no rights, no quorum).
pub async fn open(bus: &Bus, bucket: &str, spec: BucketSpec<'_>) -> Result<kv::Store, String> {
    let js = jetstream::new(bus.client().clone());
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let replicas = match spec.replicas {
        Some(n) => n,
        None => lab_replicas(&js, bus.subjects().prefix()).await,
    };
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(spec.description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: spec.max_age,
        storage: spec.storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: false,
        num_replicas: replicas,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating the bucket: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("opening the bucket: {e}"))
}

/// What [`follow_lab_replicas`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabReplicas {
    /// No lab (yet): there is no subnet bucket to follow.
    NoLab,
    /// The bucket has at least the lab's replicas.
    Enough,
    /// The bucket had fewer, and now has the lab's.
    Raised {
        /// What it had.
        from: usize,
        /// What it has now.
        to: usize,
    },
}

/// Raises the replicas of `bucket`'s stream to the lab's (its subnet bucket's) when it has
/// fewer, as a bucket created before any netd had made the subnet bucket does (it got 1; when
/// that one replica's node is lost, so is the bucket). An error when the bucket could not be
/// read (it may not exist yet) or changed.
pub async fn follow_lab_replicas(bus: &Bus, bucket: &str) -> Result<LabReplicas, String> {
    let js = jetstream::new(bus.client().clone());
    let Some(want) = subnet_replicas(&js, bus.subjects().prefix()).await else {
        return Ok(LabReplicas::NoLab);
    };
    let stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| format!("reading the bucket: {e}"))?;
    let mut config = stream.cached_info().config.clone();
    let have = config.num_replicas.max(1);
    if have >= want {
        return Ok(LabReplicas::Enough);
    }
    config.num_replicas = want;
    js.update_stream(config)
        .await
        .map_err(|e| format!("raising its replicas from {have} to {want}: {e}"))?;
    Ok(LabReplicas::Raised {
        from: have,
        to: want,
    })
}

/// The replicas of the lab's subnet bucket, or 1 when there is none (yet).
async fn lab_replicas(js: &jetstream::Context, prefix: &str) -> usize {
    subnet_replicas(js, prefix).await.unwrap_or(1)
}

/// The replicas of the lab's subnet bucket; `None` when there is none (yet) or it cannot be
/// read.
async fn subnet_replicas(js: &jetstream::Context, prefix: &str) -> Option<usize> {
    let subnets = banger_proto::net::subnet_bucket(prefix);
    let stream = js.get_stream(format!("KV_{subnets}")).await.ok()?;
    Some(stream.cached_info().config.num_replicas.max(1))
}
