//! Reactions to this host's lifecycle events: `stopped` removes a VM's tap and rules (the lease
//! is kept, so it comes back with the same address), `deleted` also releases the lease.
//!
//! One owner per teardown step: the controller calls `net.detach` on the hot path, before its
//! `vm stop`/`vm delete` returns and before it publishes the event, so the tap is gone when the
//! user gets the answer. These reactions are idempotent catch-up for a call that was missed
//! (netd unreachable at that moment, an older controller): a lease the controller already
//! detached (inactive) costs no kernel call and no write, only a release still due is made
//! (see [`Teardown::catch_up`]); reconciliation catches what both missed.
//!
//! Events that arrive together (a batch `vm stop` of many VMs) are torn down together, so their
//! taps go in one kernel operation: after the first event, more are collected for
//! [`BATCH_WINDOW`]. Events of VMs netd has no lease for are ignored, and so is a `stopped`
//! event of a VM attached again since (a restart's `attach` can overtake its own `stopped`
//! event, which waits for the batch window).

use std::sync::Arc;
use std::time::Duration;

use banger_bus::BusError;
use banger_bus::events::{EventStream, ReceivedEvent};
use banger_bus::runtime::chain;
use banger_bus::shutdown::CancellationToken;
use banger_proto::event::EventKind;
use tracing::Instrument;

use crate::ops::detach::{Teardown, teardown};
use crate::state::Netd;

/// How long to wait for more events after the first one of a batch.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most VMs torn down in one batch.
const MAX_BATCH: usize = 512;

/// The subscriptions, made before serving so no event is missed.
pub struct Subscriptions {
    stopped: EventStream,
    deleted: EventStream,
}

/// Subscribes to this host's `stopped` and `deleted` events.
pub async fn subscribe(netd: &Netd) -> Result<Subscriptions, BusError> {
    let s = netd.bus.subjects();
    let host = Some(&netd.host);
    Ok(Subscriptions {
        stopped: netd
            .bus
            .subscribe_events(s.events_filter(host, None, Some(EventKind::Stopped)), None)
            .await?,
        deleted: netd
            .bus
            .subscribe_events(s.events_filter(host, None, Some(EventKind::Deleted)), None)
            .await?,
    })
}

fn item(ev: &ReceivedEvent) -> Teardown {
    Teardown {
        vm: ev.event.vm.id.clone(),
        release: ev.event.kind == EventKind::Deleted,
        stopped_at_ms: (ev.event.kind == EventKind::Stopped).then_some(ev.event.at_ms),
        catch_up: true,
    }
}

/// Reacts to events until `shutdown` (or until the subscriptions end).
pub async fn watch(netd: Arc<Netd>, mut subs: Subscriptions, shutdown: CancellationToken) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            e = subs.stopped.next() => e,
            e = subs.deleted.next() => e,
        };
        let Some(first) = first else { break };
        let span = first.span.clone();
        let mut batch = vec![item(&first)];
        let until = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            let more = tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                e = subs.stopped.next() => e,
                e = subs.deleted.next() => e,
            };
            match more {
                Some(e) => batch.push(item(&e)),
                None => break,
            }
        }
        let result = teardown(&netd, &batch)
            .instrument(tracing::info_span!(parent: &span, "net.teardown", vms = batch.len()))
            .await;
        if let Err(e) = result {
            span.in_scope(|| {
                tracing::warn!(error = %chain(&e), "tearing down after events failed; reconciliation will retry");
            });
        }
    }
    subs.stopped.unsubscribe().await;
    subs.deleted.unsubscribe().await;
}
