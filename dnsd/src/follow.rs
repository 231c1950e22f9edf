//! Following lifecycle events of every host: `started` serves a VM's names, `stopped`,
//! `deleted` (and `failed` when the VM is not running) remove them. Each event is logged in the
//! span the bus links to the publisher's trace.
//!
//! Events that are already waiting are applied as one batch (up to [`MAX_BATCH`]) and the zone
//! snapshot is republished once per batch (the batch's changes applied together), so a burst of
//! events costs one publication, not one each.

use std::sync::Arc;

use banger_bus::events::{EventStream, ReceivedEvent};
use banger_bus::shutdown::CancellationToken;

use crate::state::State;

/// The most events applied before the zone is republished.
pub const MAX_BATCH: usize = 1024;

/// Applies events from `events` until `stop` is cancelled or the subscription ends.
pub async fn follow(mut events: EventStream, state: Arc<State>, stop: CancellationToken) {
    let mut batch: Vec<ReceivedEvent> = Vec::new();
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            r = events.next() => r,
        };
        let Some(received) = received else {
            tracing::warn!("the event subscription ended; relying on periodic rebuilds");
            break;
        };
        batch.push(received);
        let mut ended = false;
        while batch.len() < MAX_BATCH {
            // Take what is already waiting, without waiting for more. Receiving is
            // cancel-safe: a message not yet taken stays queued for the next call.
            let ready = tokio::select! {
                biased;
                r = events.next() => Some(r),
                () = std::future::ready(()) => None,
            };
            match ready {
                Some(Some(r)) => batch.push(r),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        apply(&state, &batch);
        batch.clear();
        if ended {
            tracing::warn!("the event subscription ended; relying on periodic rebuilds");
            break;
        }
    }
    events.unsubscribe().await;
}

fn apply(state: &State, batch: &[ReceivedEvent]) {
    let result = state.store.apply_events(
        batch
            .iter()
            .map(|r| (r.event.kind, r.event.seq, &r.event.vm)),
    );
    match result {
        Ok(outcomes) => {
            let mut gap = false;
            for (received, outcome) in batch.iter().zip(outcomes) {
                let ev = &received.event;
                let _span = received.span.enter();
                if outcome.changed {
                    tracing::info!(vm = %ev.vm.name, host = %ev.vm.host, kind = %ev.kind, "zone updated");
                }
                if outcome.gap {
                    tracing::info!(host = %ev.vm.host, seq = ev.seq, "missed events of this host; rebuilding now");
                    gap = true;
                }
            }
            if gap {
                state.rebuild_now.notify_one();
            }
        }
        Err(e) => tracing::error!(events = batch.len(), error = %e, "applying events"),
    }
}
