//! Lab membership, as netd's subnet claims record it.
//!
//! In lab mode every host's netd claims its VM subnet in a JetStream key-value bucket
//! ([`banger_proto::net::subnet_bucket`]; value: the host id). A host that is cut off answers
//! nothing on the bus, so discovery alone cannot tell it from a host that never existed; its
//! claim can. Readers treat this as a hint: no bucket (a single host), or a bucket that cannot
//! be read in time, is simply no extra knowledge.

use std::time::Duration;

use async_nats::jetstream;
use futures::TryStreamExt;

use crate::client::Bus;

/// How long one read of the bucket may take before it is tried again. A healthy read takes
/// milliseconds; while a cluster node is cut off, a JetStream request now and then goes
/// unanswered (it was routed to the lost node) and a fresh one is answered at once.
const ATTEMPT: Duration = Duration::from_millis(300);

/// The hosts holding a subnet claim, sorted and deduplicated; empty at once when there is no
/// bucket (or no JetStream), and empty after `wait` when it could not be read.
pub async fn lab_hosts(bus: &Bus, wait: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + wait;
    let js = jetstream::new(bus.client().clone());
    let bucket = banger_proto::net::subnet_bucket(bus.subjects().prefix());
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            tracing::debug!("lab membership not read in time");
            return Vec::new();
        }
        match tokio::time::timeout(ATTEMPT.min(left), read(&js, &bucket)).await {
            Ok(Ok(hosts)) => return hosts,
            Ok(Err(Absent)) => return Vec::new(),
            Err(_) => tracing::debug!("reading lab membership timed out; trying again"),
        }
    }
}

/// There is no bucket to read (or the read failed outright): no lab membership known.
struct Absent;

async fn read(js: &jetstream::Context, bucket: &str) -> Result<Vec<String>, Absent> {
    let absent = |e: &dyn std::fmt::Display| {
        tracing::debug!(error = %e, "lab membership unavailable");
        Absent
    };
    let kv = js.get_key_value(bucket).await.map_err(|e| absent(&e))?;
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| absent(&e))?
        .try_collect()
        .await
        .map_err(|e| absent(&e))?;
    let mut hosts = Vec::new();
    for k in keys {
        if let Some(v) = kv.get(&k).await.map_err(|e| absent(&e))? {
            hosts.push(String::from_utf8_lossy(&v).into_owned());
        }
    }
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}
