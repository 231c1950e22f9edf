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

/// The hosts holding a subnet claim, sorted and deduplicated; empty when there is no bucket
/// or it could not be read within `wait`.
pub async fn lab_hosts(bus: &Bus, wait: Duration) -> Vec<String> {
    match tokio::time::timeout(wait, read(bus)).await {
        Ok(Ok(hosts)) => hosts,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "lab membership unavailable");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!("lab membership not read in time");
            Vec::new()
        }
    }
}

async fn read(bus: &Bus) -> Result<Vec<String>, async_nats::Error> {
    let js = jetstream::new(bus.client().clone());
    let kv = js
        .get_key_value(banger_proto::net::subnet_bucket(bus.subjects().prefix()))
        .await?;
    let keys: Vec<String> = kv.keys().await?.try_collect().await?;
    let mut hosts = Vec::new();
    for k in keys {
        if let Some(v) = kv.get(&k).await? {
            hosts.push(String::from_utf8_lossy(&v).into_owned());
        }
    }
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}
