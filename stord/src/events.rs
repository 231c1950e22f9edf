//! Reaction to this host's `deleted` events: whatever volumes stord still holds for the VM are
//! removed. One owner per teardown step: the controller calls `volume.delete` itself before it
//! publishes `deleted`, so this is catch-up for a delete whose storage step failed or was
//! skipped, and idempotent: a VM with neither a record nor a directory ends at that cheap check,
//! without listing or touching a device ([`volume_delete::catch_up`]).

use std::sync::Arc;

use banger_bus::events::EventStream;
use banger_bus::shutdown::CancellationToken;
use banger_bus::{Bus, BusError};
use banger_proto::HostId;
use banger_proto::event::EventKind;
use tracing::Instrument;

use crate::ops::volume_delete;
use crate::state::Stord;

/// Subscribes to `host`'s `deleted` events (before serving, so none is missed).
pub async fn subscribe(bus: &Bus, host: &HostId) -> Result<EventStream, BusError> {
    let filter = bus
        .subjects()
        .events_filter(Some(host), None, Some(EventKind::Deleted));
    bus.subscribe_events(filter, None).await
}

/// Reacts to events until `shutdown` (or until the subscription ends).
pub async fn watch(st: Arc<Stord>, mut events: EventStream, shutdown: CancellationToken) {
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => break,
            e = events.next() => e,
        };
        let Some(ev) = ev else { break };
        let vm = ev.event.vm.id.clone();
        let span = tracing::info_span!(parent: &ev.span, "store.volume.delete", vm.id = %vm);
        match volume_delete::catch_up(st.clone(), vm.clone())
            .instrument(span.clone())
            .await
        {
            Ok(Some(r)) if r.removed => span.in_scope(|| {
                tracing::info!(vm.id = %vm, "removed the volumes of a deleted VM");
            }),
            Ok(_) => {}
            Err(e) => span.in_scope(|| {
                tracing::warn!(vm.id = %vm, error = %e, "removing the volumes of a deleted VM");
            }),
        }
    }
    events.unsubscribe().await;
}
