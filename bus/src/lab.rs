//! Lab membership, as netd's subnet claims record it.
//!
//! In lab mode every host's netd claims its VM subnet in a JetStream key-value bucket
//! ([`banger_proto::net::subnet_bucket`]; value: the host id). A host that is cut off answers
//! nothing on the bus, so discovery alone cannot tell it from a host that never existed; its
//! claim can. No bucket (a single host) is no lab; a bucket that cannot be read in time (a
//! node without JetStream quorum, a user without the rights) is an unknown membership, which
//! readers must say, since any answer built without it may be incomplete.
//!
//! The read creates no consumer (a consumer on a replicated stream is a raft group of its
//! own, created and deleted on every read): the stream info lists the keys, and each key's
//! last value is fetched with a direct message get.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, RequestError, RequestErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::TryStreamExt;

use crate::client::Bus;

/// How long one read of the bucket may take before it is tried again. A healthy read takes
/// milliseconds; while a cluster node is cut off, a JetStream request now and then goes
/// unanswered (it was routed to the lost node) and a fresh one is answered at once.
const ATTEMPT: Duration = Duration::from_millis(300);

/// The header JetStream's key-value store marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";

/// What is known of the lab's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// No subnet bucket (or no JetStream): a single host, not a lab.
    NotALab,
    /// The hosts holding a subnet claim, sorted and deduplicated.
    Members(Vec<String>),
    /// The bucket exists or may exist, but could not be read in time.
    Unknown,
}

impl Membership {
    /// The known members (none when not a lab or unknown).
    pub fn hosts(&self) -> &[String] {
        match self {
            Self::Members(h) => h,
            Self::NotALab | Self::Unknown => &[],
        }
    }

    /// Whether the membership could not be read.
    pub fn is_unknown(&self) -> bool {
        *self == Self::Unknown
    }
}

/// What one read of a key-value bucket found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketRead {
    /// No such bucket (or no JetStream at all).
    Absent,
    /// The current value of every key (deleted and purged keys left out), in key order.
    Values(Vec<Vec<u8>>),
    /// The bucket could not be read in time.
    Unknown,
}

/// Reads the lab's membership, trying again for up to `wait`.
pub async fn membership(bus: &Bus, wait: Duration) -> Membership {
    let bucket = banger_proto::net::subnet_bucket(bus.subjects().prefix());
    match read_bucket(bus, &bucket, wait).await {
        BucketRead::Absent => Membership::NotALab,
        BucketRead::Unknown => Membership::Unknown,
        BucketRead::Values(values) => {
            let mut hosts: Vec<String> = values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            hosts.sort();
            hosts.dedup();
            Membership::Members(hosts)
        }
    }
}

/// Reads every current value of key-value bucket `bucket` (without a consumer, see the module
/// docs), trying again for up to `wait`.
pub async fn read_bucket(bus: &Bus, bucket: &str, wait: Duration) -> BucketRead {
    let deadline = tokio::time::Instant::now() + wait;
    let js = jetstream::new(bus.client().clone());
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            tracing::debug!(bucket, "bucket not read in time");
            return BucketRead::Unknown;
        }
        match tokio::time::timeout(ATTEMPT.min(left), read(&js, bucket)).await {
            Ok(Ok(m)) => return m,
            Ok(Err(e)) => {
                tracing::debug!(bucket, error = %e, "reading the bucket failed; trying again")
            }
            Err(_) => tracing::debug!(bucket, "reading the bucket timed out; trying again"),
        }
    }
}

/// One read: `Ok` when the answer is decisive, `Err` when it is worth trying again.
async fn read(js: &jetstream::Context, bucket: &str) -> Result<BucketRead, String> {
    let stream = match js.get_stream(format!("KV_{bucket}")).await {
        Ok(s) => s,
        Err(e) => {
            return match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(BucketRead::Absent)
                }
                GetStreamErrorKind::Request if no_jetstream(&e) => Ok(BucketRead::Absent),
                _ => Err(e.to_string()),
            };
        }
    };
    let prefix = format!("$KV.{bucket}.");
    let mut subjects: Vec<(String, usize)> = stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    subjects.sort();
    let mut values = Vec::new();
    for (subject, _) in subjects {
        let msg = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m,
            // Expired (max_age) between the listing and the get: gone, as a delete is.
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
            Err(e) => return Err(e.to_string()),
        };
        let deleted = msg
            .headers
            .get(KV_OPERATION)
            .is_some_and(|op| op.as_str() != "PUT");
        if !deleted && subject.starts_with(&prefix) && !msg.payload.is_empty() {
            values.push(msg.payload.to_vec());
        }
    }
    Ok(BucketRead::Values(values))
}

/// Whether a failed JetStream request failed because no server runs JetStream.
fn no_jetstream(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<RequestError>())
        .is_some_and(|r| r.kind() == RequestErrorKind::NoResponders)
}
