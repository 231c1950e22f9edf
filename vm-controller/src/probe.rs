//! After a boot, the controller asks the guest agent for its health until it first answers
//! healthy, and publishes the `health` event then: `vm create --wait` listens for that event
//! instead of polling (it subscribes before it sends the create, so the event cannot be
//! missed).
//!
//! The probe runs every [`FIRST_INTERVAL`] for [`FAST_FOR`], then doubles up to
//! [`MAX_INTERVAL`], and gives up
//! after [`PROBE_FOR`] (an image without an agent never answers; `vm health` still asks on
//! demand). It ends as soon as the boot it probes for is over (the VM stopped, failed, was
//! deleted or booted again), and it publishes only the change to healthy: an agent that does
//! not answer yet is the normal state of a booting guest, and a guest that dies is the watch's
//! to report ([`crate::watch`]).

use std::time::Duration;

use banger_proto::VmId;
use banger_proto::event::EventKind;
use banger_proto::vm::VmState;

use crate::controller::Controller;
use crate::store::VmRecord;

/// The wait between two probes during [`FAST_FOR`] after a boot: an agent usually answers
/// within tens of milliseconds, and a probe that finds nothing listening costs a failed
/// connect, so the first answer is seen within this of the agent's start.
const FIRST_INTERVAL: Duration = Duration::from_millis(2);
/// How long after a boot the probes stay [`FIRST_INTERVAL`] apart before backing off.
const FAST_FOR: Duration = Duration::from_secs(1);
/// The longest wait between two probes.
const MAX_INTERVAL: Duration = Duration::from_millis(100);
/// How long after a boot the agent is probed.
const PROBE_FOR: Duration = Duration::from_secs(120);
/// How long after a boot an operation that needs the agent (exec) waits for its first answer:
/// `vm start` returns when the hypervisor runs, before the guest's agent listens, and
/// `banger vm start web && banger vm exec web -- ...` should work.
const AGENT_BOOT_WAIT_MS: u64 = 30_000;

impl Controller {
    /// Forgets VM `id`'s last known health: a boot begins, and the next healthy answer is news.
    pub(crate) fn forget_health(&self, id: &VmId) {
        if let Ok(mut seen) = self.inner.last_health.lock() {
            seen.remove(id);
        }
    }

    /// Probes the agent of VM `id`, booted at `started_at_ms`, in the background (see the
    /// module's documentation).
    pub(crate) fn probe_health(&self, id: &VmId, started_at_ms: Option<u64>) {
        let ctl = self.clone();
        let id = id.clone();
        tokio::spawn(async move { ctl.probe(&id, started_at_ms).await });
    }

    /// VM `id`'s record while it is still running the boot of `started_at_ms`.
    async fn this_boot(&self, id: &VmId, started_at_ms: Option<u64>) -> Option<VmRecord> {
        match self.inner.db.find(id).await {
            Ok(Some(rec))
                if rec.state() == VmState::Running && rec.info.started_at_ms == started_at_ms =>
            {
                Some(rec)
            }
            _ => None,
        }
    }

    /// Waits, within [`AGENT_BOOT_WAIT_MS`] of `rec`'s boot, until its agent has answered
    /// healthy once (the probe's record, else a health request of its own), so an exec right
    /// after a start does not meet a guest still booting. Returns at once for a VM whose agent
    /// answered since the boot, whose boot is older, or that stops running meanwhile; the
    /// caller then talks to the agent and reports whatever happens.
    pub(crate) async fn await_agent_after_boot(&self, rec: &VmRecord) {
        let id = &rec.info.id;
        let Some(started) = rec.info.started_at_ms else {
            return;
        };
        let deadline = started.saturating_add(AGENT_BOOT_WAIT_MS);
        let mut interval = FIRST_INTERVAL;
        loop {
            let answered = self
                .inner
                .last_health
                .lock()
                .map(|seen| seen.get(id) == Some(&true))
                .unwrap_or(false);
            let now = banger_bus::now_ms();
            if answered || now >= deadline {
                return;
            }
            if self.this_boot(id, Some(started)).await.is_none() {
                return;
            }
            if self.agent_healthy(id).await {
                return;
            }
            let left = Duration::from_millis(deadline.saturating_sub(now));
            tokio::time::sleep(interval.min(left)).await;
            interval = next_interval(interval, Duration::from_millis(now.saturating_sub(started)));
        }
    }

    /// Whether VM `id`'s agent answers its health check healthy.
    async fn agent_healthy(&self, id: &VmId) -> bool {
        let vsock = self.paths(id).vsock_uds;
        let port = self.inner.config.agent_port;
        matches!(self.inner.agent.health(vsock, port).await, Ok(h) if h.status == "ok")
    }

    async fn probe(&self, id: &VmId, started_at_ms: Option<u64>) {
        let begun = tokio::time::Instant::now();
        let end = begun + PROBE_FOR;
        let mut interval = FIRST_INTERVAL;
        loop {
            if self.this_boot(id, started_at_ms).await.is_none() {
                return;
            }
            if self.agent_healthy(id).await {
                // Under the VM's lock, so the event (its snapshot says `running`) cannot be
                // published after a stop that began meanwhile: dnsd would serve the name again.
                let _guard = self.lock(id).await;
                let Some(rec) = self.this_boot(id, started_at_ms).await else {
                    return;
                };
                let changed = self
                    .inner
                    .last_health
                    .lock()
                    .map(|mut seen| seen.insert(id.clone(), true) != Some(true))
                    .unwrap_or(false);
                if changed {
                    tracing::debug!(vm.id = %id, vm.name = %rec.info.name, "guest agent healthy");
                    self.emit(EventKind::Health, &rec.info).await;
                }
                return;
            }
            if tokio::time::Instant::now() + interval >= end {
                tracing::debug!(vm.id = %id, "the guest agent did not answer; probing ends");
                return;
            }
            tokio::time::sleep(interval).await;
            interval = next_interval(interval, begun.elapsed());
        }
    }
}

/// The wait after `interval`, `since` the boot: [`FIRST_INTERVAL`] during [`FAST_FOR`], then
/// doubling up to [`MAX_INTERVAL`].
fn next_interval(interval: Duration, since: Duration) -> Duration {
    if since < FAST_FOR {
        FIRST_INTERVAL
    } else {
        (interval * 2).min(MAX_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_stay_close_during_the_first_second_then_back_off_to_the_cap() {
        let second = Duration::from_secs(1);
        assert_eq!(
            next_interval(FIRST_INTERVAL, Duration::ZERO),
            FIRST_INTERVAL
        );
        assert_eq!(next_interval(FIRST_INTERVAL, second / 2), FIRST_INTERVAL);
        assert_eq!(next_interval(FIRST_INTERVAL, second), FIRST_INTERVAL * 2);
        let mut i = FIRST_INTERVAL;
        for _ in 0..20 {
            i = next_interval(i, second * 2);
        }
        assert_eq!(i, MAX_INTERVAL);
    }
}
