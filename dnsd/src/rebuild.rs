//! Rebuilding the zone from `vm.list`: at start-up, every `rebuild_interval`, and at once when
//! an event gap is noticed. The caller first finds the controllers with `$SRV.PING`, then
//! gathers until each has answered or the deadline passes; a host that did not answer keeps
//! its records.

use std::sync::Arc;
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::shutdown::CancellationToken;
use banger_proto::op::{self, Lab};
use banger_proto::service;
use banger_proto::vm::ListVmsRequest;

use crate::state::State;
use crate::zone::ZoneError;

/// How long `$SRV.PING` collects answers when counting controllers.
pub const PING_WAIT: Duration = Duration::from_millis(250);

/// Why a rebuild did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Finding the controllers failed.
    #[error("finding the vm-controllers")]
    Ping(#[source] banger_bus::BusError),
    /// The gather failed.
    #[error("gathering vm.list")]
    Gather(#[source] banger_bus::BusError),
    /// The zone could not be built.
    #[error("building the zone")]
    Zone(#[source] ZoneError),
}

/// What one rebuild saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Controllers found by ping.
    pub expected: usize,
    /// Hosts that answered.
    pub answered: Vec<String>,
    /// Hosts found by ping that did not answer (their records were kept).
    pub missing: Vec<String>,
    /// Whether the served records changed.
    pub changed: bool,
}

/// Runs one rebuild.
pub async fn rebuild_once(
    bus: &Bus,
    state: &State,
    gather_timeout: Duration,
) -> Result<RebuildReport, RebuildError> {
    let controllers = bus
        .ping(Some(service::VM_CONTROLLER), PING_WAIT)
        .await
        .map_err(RebuildError::Ping)?;
    let since = state.store.generation();
    let answers = if controllers.is_empty() {
        Vec::new()
    } else {
        bus.gather::<op::vm::List>(
            &Lab,
            &ListVmsRequest::default(),
            Some(controllers.len()),
            gather_timeout,
        )
        .await
        .map_err(RebuildError::Gather)?
    };
    let mut replies = Vec::new();
    for a in answers {
        match a {
            Ok(r) => replies.push(r),
            Err(e) => tracing::warn!(error = %e, "a vm.list answer was unusable"),
        }
    }
    let changed = state
        .store
        .apply_list(since, &replies)
        .map_err(RebuildError::Zone)?;
    let answered: Vec<String> = replies.iter().map(|r| r.host.to_string()).collect();
    let missing = controllers
        .iter()
        .filter_map(|c| c.host())
        .filter(|h| !answered.iter().any(|a| a == h))
        .map(str::to_owned)
        .collect();
    Ok(RebuildReport {
        expected: controllers.len(),
        answered,
        missing,
        changed,
    })
}

/// Rebuilds every `interval` (and when woken) until `stop` is cancelled. The first rebuild has
/// already run at start-up.
pub async fn rebuild_loop(
    bus: Bus,
    state: Arc<State>,
    interval: Duration,
    gather_timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
            () = state.rebuild_now.notified() => {}
        }
        // A rebuild waits on the bus; stop must not wait for it.
        tokio::select! {
            () = stop.cancelled() => break,
            () = rebuild_and_log(&bus, &state, gather_timeout) => {}
        }
    }
}

/// Runs one rebuild and logs its outcome.
pub async fn rebuild_and_log(bus: &Bus, state: &State, gather_timeout: Duration) {
    match rebuild_once(bus, state, gather_timeout).await {
        Ok(report) => {
            state.rebuilt_at(banger_bus::now_ms());
            if !report.missing.is_empty() {
                tracing::warn!(missing = ?report.missing, "vm-controllers did not answer vm.list; keeping their records");
            }
            if report.changed {
                tracing::info!(controllers = report.expected, answered = ?report.answered, "zone rebuilt from vm.list");
            } else {
                tracing::debug!(controllers = report.expected, "zone unchanged by vm.list");
            }
        }
        Err(e) => tracing::warn!(error = %banger_bus::runtime::chain(&e), "rebuilding the zone"),
    }
}
