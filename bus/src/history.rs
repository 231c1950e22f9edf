//! Event history: a JetStream stream that keeps lifecycle events for replay
//! (`banger events --since 10m`).
//!
//! Live reactions never depend on it — services consume events with plain subscriptions — so a
//! NATS without JetStream still runs banger; only replay is unavailable there.

use std::time::Duration;

use async_nats::jetstream;

use crate::client::Bus;
use crate::error::BusError;

/// How long events are kept: long enough to look back over a working week.
pub const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The stream name for a subject prefix: `banger` -> `BANGER_EVENTS`.
pub fn stream_name(prefix: &str) -> String {
    banger_proto::subject::jetstream_name(prefix, "EVENTS")
}

/// Creates the event stream if it does not exist (idempotent).
pub async fn ensure_event_stream(bus: &Bus) -> Result<(), BusError> {
    ensure_replicated_event_stream(bus, 1).await
}

/// Creates the event stream with `replicas` copies if it does not exist (idempotent): in a
/// lab, three, so the history survives the loss of a node.
pub async fn ensure_replicated_event_stream(bus: &Bus, replicas: usize) -> Result<(), BusError> {
    let js = jetstream::new(bus.client().clone());
    let name = stream_name(bus.subjects().prefix());
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![bus.subjects().all_events()],
        max_age: EVENT_RETENTION,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| BusError::Config(format!("creating the JetStream stream {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_valid_for_any_prefix() {
        assert_eq!(stream_name("banger"), "BANGER_EVENTS");
        assert_eq!(stream_name("lab.a-1"), "LAB_A_1_EVENTS");
    }
}
