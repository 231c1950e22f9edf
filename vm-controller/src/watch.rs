//! The watch over running VMs: a guest whose init died, or whose hypervisor exited, is reported
//! within a fraction of a second instead of being waited out.
//!
//! Every VM this controller booted (or re-adopted) is watched until it stops. Every
//! [`WATCH_INTERVAL`] one task looks at each watched VM's serial console for a kernel panic
//! (what a guest kernel prints when its init exits; the simulator prints the same when the
//! agent exits — see [`crate::postmortem`]) and asks the hypervisor boundary whether the
//! process it spawned exited. A dead guest ends as `failed` with the exit status, a hint and the
//! console's last lines as its reason: its hypervisor is killed (a panicked guest never answers
//! again), its tap detached, a `failed` event published. A hypervisor that exited ends as
//! `failed` with its exit status and its log's last error (or `stopped` when it exited cleanly:
//! the guest shut itself down). `vm health` also looks at once when the agent does not answer,
//! so `vm create --wait` stops waiting as soon as the panic is on the console.
//!
//! Each VM is handled under its own lock, taken with `try_lock`: a VM an operation works on is
//! looked at again on the next round. The console offsets live in memory: a re-adopted VM (the
//! controller restarted) is watched from the console's end at adoption, and a guest that died
//! while no controller ran is found by reconcile when its hypervisor is gone, or else by its
//! failing health check.

use std::collections::HashMap;
use std::time::Duration;

use banger_bus::shutdown::CancellationToken;
use banger_proto::VmId;
use banger_proto::event::EventKind;
use banger_proto::vm::VmState;

use crate::controller::Controller;
use crate::error::{HaltError, RecordError, StateError};
use crate::postmortem::{self, ConsoleScan, GuestDeath};
use crate::store::VmRecord;

/// How often the watched VMs are looked at: a dead guest is reported within this (plus the
/// time to kill its hypervisor and detach its tap).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How long an ended VM's hypervisor status may take to be recorded after its process is gone.
const REAP_WAIT: Duration = Duration::from_millis(500);

/// Where a watched VM's console and log are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watch {
    /// Console offset where this boot's output starts.
    console_from: u64,
    /// Console offset up to which complete lines were looked at.
    scanned_to: u64,
    /// Hypervisor log offset where this boot's lines start.
    vmm_log_from: u64,
}

/// Where a VM's console and hypervisor log end now (blocking reads of two file sizes).
pub(crate) fn log_ends(ctl: &Controller, id: &VmId) -> (u64, u64) {
    let paths = ctl.paths(id);
    (
        postmortem::file_len(&paths.serial_log),
        postmortem::file_len(&paths.vmm_log),
    )
}

/// What a look at one VM found.
enum Finding {
    GuestDied(GuestDeath),
    /// The process this controller spawned exited (how is read again when it is settled).
    HypervisorExited,
}

impl Controller {
    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, Watch>> {
        self.inner
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts watching VM `id`, whose boot's console and log output start at `from`.
    pub(crate) fn watch(&self, id: &VmId, (console_from, vmm_log_from): (u64, u64)) {
        self.watched().insert(
            id.clone(),
            Watch {
                console_from,
                scanned_to: console_from,
                vmm_log_from,
            },
        );
    }

    /// Starts watching a re-adopted VM from where its console ends now, unless it is watched.
    pub(crate) async fn watch_adopted(&self, id: &VmId) {
        if self.watched().contains_key(id) {
            return;
        }
        let ctl = self.clone();
        let key = id.clone();
        let ends = tokio::task::spawn_blocking(move || log_ends(&ctl, &key))
            .await
            .unwrap_or_default();
        self.watched().entry(id.clone()).or_insert(Watch {
            console_from: ends.0,
            scanned_to: ends.0,
            vmm_log_from: ends.1,
        });
    }

    /// Stops watching VM `id` (it stopped, failed or went away).
    pub(crate) fn unwatch(&self, id: &VmId) {
        self.watched().remove(id);
    }

    /// Looks at VM `id`'s console for a panic (advancing its scan offset when there is none),
    /// then at its hypervisor; with the boot the finding is about.
    async fn look(&self, id: &VmId) -> Option<(u64, Finding)> {
        let watch = *self.watched().get(id)?;
        let serial = self.paths(id).serial_log;
        let scan = tokio::task::spawn_blocking(move || {
            postmortem::scan_console(&serial, watch.console_from, watch.scanned_to)
        })
        .await
        .ok()?;
        let finding = self.judge(id, scan).await?;
        Some((watch.console_from, finding))
    }

    /// What a console scan and the hypervisor's exit status say about VM `id` (advancing its
    /// scan offset when the console shows no panic).
    async fn judge(&self, id: &VmId, scan: ConsoleScan) -> Option<Finding> {
        match scan {
            ConsoleScan::Dead(death) => Some(Finding::GuestDied(death)),
            ConsoleScan::Alive { scanned_to } => {
                if let Some(w) = self.watched().get_mut(id) {
                    w.scanned_to = scanned_to;
                }
                let paths = self.paths(id);
                self.inner
                    .vmm
                    .exit_status(&paths, Duration::ZERO)
                    .await
                    .map(|_| Finding::HypervisorExited)
            }
        }
    }

    /// One round over every watched VM: every console read in one blocking task, then the
    /// hypervisors' exit statuses (kept in memory), then the dead ones ended. The service runs
    /// one every [`WATCH_INTERVAL`]; tests run one when they need it done.
    pub async fn watch_round(&self) {
        let watched: Vec<(VmId, Watch, std::path::PathBuf)> = self
            .watched()
            .iter()
            .map(|(id, w)| (id.clone(), *w, self.paths(id).serial_log))
            .collect();
        if watched.is_empty() {
            return;
        }
        let Ok(scans) = tokio::task::spawn_blocking(move || {
            watched
                .into_iter()
                .map(|(id, w, serial)| {
                    let scan = postmortem::scan_console(&serial, w.console_from, w.scanned_to);
                    (id, w.console_from, scan)
                })
                .collect::<Vec<_>>()
        })
        .await
        else {
            return;
        };
        for (id, boot, scan) in scans {
            if let Some(finding) = self.judge(&id, scan).await {
                self.settle(&id, boot, finding).await;
            }
        }
    }

    /// Ends a VM the watch found dead in the boot whose console starts at `boot`, under its
    /// lock (skipped this round when busy).
    async fn settle(&self, id: &VmId, boot: u64, finding: Finding) {
        let Some(_guard) = self.try_lock(id) else {
            return;
        };
        let rec = match self.inner.db.find(id).await {
            Ok(Some(rec)) if rec.state() == VmState::Running => rec,
            // Stopped, failed or gone meanwhile: nothing to watch any more.
            _ => {
                self.unwatch(id);
                return;
            }
        };
        // Restarted since the look (a new boot, a new watch): the finding is about the last one.
        if self.watched().get(id).map(|w| w.console_from) != Some(boot) {
            return;
        }
        // The process this controller spawned exited; one holding the socket now is not it.
        if matches!(finding, Finding::HypervisorExited)
            && self
                .inner
                .vmm
                .find_process(&self.paths(id), rec.pid)
                .await
                .is_some()
        {
            return;
        }
        let result = match finding {
            Finding::GuestDied(death) => self.end_dead_guest(&rec, &death).await,
            Finding::HypervisorExited => self
                .end_exited_hypervisor(&rec)
                .await
                .map(drop)
                .map_err(HaltError::from),
        };
        if let Err(e) = result {
            tracing::warn!(vm.id = %id, error = %banger_bus::runtime::chain(&e), "ending a vm whose guest or hypervisor died");
        }
    }

    /// A running VM whose guest died: its hypervisor is killed, its tap detached, and it becomes
    /// `failed` with the reason (the caller holds its lock).
    async fn end_dead_guest(&self, rec: &VmRecord, death: &GuestDeath) -> Result<(), HaltError> {
        let reason = death.reason();
        tracing::warn!(
            vm.id = %rec.id(), vm.name = %rec.info.name, cause = %death.cause,
            "the guest died (kernel panic on its serial console); failing the vm"
        );
        let paths = self.paths(rec.id());
        self.kill_all(&paths, rec.pid).await?;
        self.finish_as(rec, VmState::Failed, Some(reason)).await?;
        Ok(())
    }

    /// A running VM whose hypervisor process is gone (the caller holds its lock): `failed` with
    /// the exit status and the log's last error, or `stopped` after a clean exit; a kernel panic
    /// on the console comes first (a guest booted with `panic=1 reboot=k` reboots after the
    /// panic, and the hypervisor then exits cleanly).
    pub(crate) async fn end_exited_hypervisor(
        &self,
        rec: &VmRecord,
    ) -> Result<VmRecord, RecordError> {
        let id = rec.id().clone();
        let paths = self.paths(&id);
        let status = self.inner.vmm.exit_status(&paths, REAP_WAIT).await;
        let watch = self.watched().get(&id).copied();
        let serial = paths.serial_log.clone();
        let vmm_log = paths.vmm_log.clone();
        let (death, last_error) = tokio::task::spawn_blocking(move || {
            let death = watch.and_then(|w| {
                match postmortem::scan_console(&serial, w.console_from, w.scanned_to) {
                    ConsoleScan::Dead(d) => Some(d),
                    ConsoleScan::Alive { .. } => None,
                }
            });
            let from = watch.map_or(0, |w| w.vmm_log_from);
            (death, postmortem::last_error_line(&vmm_log, from))
        })
        .await
        .unwrap_or_default();
        let (state, reason) = match death {
            Some(d) => (VmState::Failed, d.reason()),
            None => {
                let exit = postmortem::hypervisor_exit(status.as_deref(), last_error.as_deref());
                let state = if exit.failed {
                    VmState::Failed
                } else {
                    VmState::Stopped
                };
                (state, exit.reason)
            }
        };
        tracing::warn!(vm.id = %id, vm.name = %rec.info.name, %state, %reason, "the hypervisor process is gone");
        self.finish_as(rec, state, Some(reason)).await
    }

    /// For `vm health` when the agent does not answer: whether the guest died, ending the VM
    /// when it did. The error to reply with in that case.
    pub(crate) async fn dead_guest_error(&self, id: &VmId) -> Option<StateError> {
        let (boot, finding) = self.look(id).await?;
        self.settle(id, boot, finding).await;
        let rec = self.inner.db.find(id).await.ok().flatten()?;
        match rec.state() {
            VmState::Running => None,
            state => Some(StateError::Ended {
                name: rec.info.name,
                state,
                reason: rec.info.reason.unwrap_or_default(),
            }),
        }
    }
}

/// Runs [`Controller::watch_round`] every [`WATCH_INTERVAL`] until `shutdown`.
pub(crate) async fn watch_loop(ctl: Controller, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        ctl.watch_round().await;
    }
}

/// The event a VM that ended in `state` publishes.
pub(crate) fn end_event(state: VmState) -> EventKind {
    if state == VmState::Failed {
        EventKind::Failed
    } else {
        EventKind::Stopped
    }
}
