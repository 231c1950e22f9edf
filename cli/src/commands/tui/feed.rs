//! What the TUI hears from the bus without asking: lifecycle events on
//! `<p>.events.<host>.vm.<vm_id>.<kind>` (every host, every VM) and the connection's own events.
//!
//! async-nats reconnects by itself and replays the subscription, but events published while
//! the connection was down are lost: a reconnect therefore makes the model ask for the list
//! again ([`super::state::Effect::Resync`]). The table is never refreshed by polling.

use async_nats::Event;
use banger_proto::event::VmEvent;
use futures::StreamExt;

use super::state::{Connection, Msg};
use crate::App;

/// Subscribes to every lifecycle event. The subscription is in place on the server when this
/// returns (flushed), so a list asked for afterwards misses nothing in between.
pub(crate) async fn subscribe(app: &App) -> anyhow::Result<async_nats::Subscriber> {
    let sub = app
        .bus
        .client()
        .subscribe(app.bus.subjects().all_events())
        .await?;
    app.bus.client().flush().await?;
    Ok(sub)
}

/// The next lifecycle event; malformed payloads are skipped. `None` when the subscription
/// ended (the client was closed).
pub(crate) async fn next_event(sub: &mut async_nats::Subscriber) -> Option<Msg> {
    loop {
        let m = sub.next().await?;
        match serde_json::from_slice::<VmEvent>(&m.payload) {
            Ok(e) => return Some(Msg::Event(e)),
            Err(e) => tracing::debug!(subject = %m.subject, error = %e, "malformed event"),
        }
    }
}

/// What a connection event means for the screen; `None` for events that change nothing
/// (slow consumers, lame duck mode, ...).
pub(crate) fn connection(event: &Event) -> Option<Connection> {
    match event {
        Event::Connected => Some(Connection::Connected),
        Event::Disconnected | Event::Closed => Some(Connection::Disconnected),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_events_map_to_the_title_state() {
        assert_eq!(connection(&Event::Connected), Some(Connection::Connected));
        assert_eq!(
            connection(&Event::Disconnected),
            Some(Connection::Disconnected)
        );
        assert_eq!(connection(&Event::LameDuckMode), None);
    }
}
