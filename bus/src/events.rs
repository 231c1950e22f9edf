//! Consuming lifecycle events.
//!
//! A subscriber gets each event decoded, with a span that is *linked* to the publisher's trace
//! (not its child): the reaction is its own unit of work that happens because of the event.

use banger_proto::event::VmEvent;
use futures::StreamExt;

use crate::client::Bus;
use crate::error::BusError;
use crate::propagation;

/// A stream of decoded lifecycle events on one subject filter.
pub struct EventStream {
    sub: async_nats::Subscriber,
}

/// One received event and the span to handle it in.
pub struct ReceivedEvent {
    /// The subject it arrived on.
    pub subject: String,
    /// The event.
    pub event: VmEvent,
    /// A span linked to the publisher's trace; handle the event inside it.
    pub span: tracing::Span,
}

impl Bus {
    /// Subscribes to events matching `filter` (see [`banger_proto::Subjects::events_filter`]).
    /// With `queue`, several instances share the work.
    pub async fn subscribe_events(
        &self,
        filter: String,
        queue: Option<String>,
    ) -> Result<EventStream, BusError> {
        let sub = match queue {
            Some(q) => self.client().queue_subscribe(filter.clone(), q).await,
            None => self.client().subscribe(filter.clone()).await,
        }
        .map_err(|source| BusError::Subscribe {
            subject: filter,
            source,
        })?;
        Ok(EventStream { sub })
    }
}

impl EventStream {
    /// The next well-formed event; malformed ones are logged and skipped. `None` when the
    /// subscription ended.
    pub async fn next(&mut self) -> Option<ReceivedEvent> {
        loop {
            let msg = self.sub.next().await?;
            let subject = msg.subject.to_string();
            match serde_json::from_slice::<VmEvent>(&msg.payload) {
                Ok(event) => {
                    let span = tracing::info_span!(
                        "event",
                        otel.name = %format!("process {subject}"),
                        otel.kind = "consumer",
                        messaging.system = "nats",
                        messaging.operation.type = "process",
                        messaging.destination.name = %subject,
                        vm.id = %event.vm.id,
                        vm.name = %event.vm.name,
                        trace_id = tracing::field::Empty,
                    );
                    propagation::link_trace(&span, msg.headers.as_ref());
                    return Some(ReceivedEvent {
                        subject,
                        event,
                        span,
                    });
                }
                Err(e) => tracing::warn!(%subject, error = %e, "ignoring a malformed event"),
            }
        }
    }

    /// Stops receiving.
    pub async fn unsubscribe(mut self) {
        if let Err(e) = self.sub.unsubscribe().await {
            tracing::debug!(error = %e, "unsubscribing from events");
        }
    }
}
