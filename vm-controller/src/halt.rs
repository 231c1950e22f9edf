//! Stopping a VM: the shared half of `stop`, `kill`, `restart`, `delete` and reconcile.
//!
//! Graceful: `SendCtrlAltDel`, then wait for the process to exit within the grace window. A
//! guest that ignores CtrlAltDel (or an API that cannot deliver it) is not an error: the stage
//! is logged and the stop continues into the forced path, and the reply's note says so — the
//! earlier Go daemon returned from the wait instead and left the VM running.
//!
//! Forced: SIGKILL to the process *found by its API socket* (the stored pid is only a hint; it
//! may be stale or reused), wait until it is gone, then look again in case another process
//! still holds the socket. Then the sockets are removed, netd detaches the tap, the record
//! becomes `stopped` and the `stopped` event goes out.

use std::time::Duration;

use banger_proto::VmId;
use banger_proto::event::EventKind;
use banger_proto::net::DetachRequest;
use banger_proto::vm::VmState;
use tracing::Instrument as _;

use crate::config::VmPaths;
use crate::controller::{Controller, millis};
use crate::error::{HaltError, KillError, RecordError, StateError};
use crate::store::VmRecord;
use crate::vmm::firecracker::remove_runtime_sockets;

/// How many times a forced stop looks for a process still holding the API socket after a kill.
const KILL_ROUNDS: usize = 3;

/// Attempts at detaching a stopped VM's tap.
const DETACH_ATTEMPTS: u32 = 3;

/// Delay before the second detach attempt (growing linearly after).
const DETACH_RETRY_DELAY: Duration = Duration::from_millis(50);

/// How a VM is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HaltMode {
    /// CtrlAltDel, the grace window, then force.
    Graceful,
    /// SIGKILL at once.
    Force,
}

impl Controller {
    /// Stops VM `id` (the caller holds its lock). Returns the stopped record and a note for
    /// the user when the forced path was taken. A VM that is not running is returned as is.
    pub(crate) async fn halt(
        &self,
        id: &VmId,
        mode: HaltMode,
    ) -> Result<(VmRecord, Option<String>), HaltError> {
        let rec = self.record(id).await?;
        match rec.state() {
            VmState::Running | VmState::Starting | VmState::Stopping | VmState::Failed => {}
            VmState::Stopped => return Ok((rec, Some("the vm was not running".to_owned()))),
            state => {
                return Err(StateError::Wrong {
                    name: rec.info.name,
                    state,
                    what: "be stopped",
                }
                .into());
            }
        }
        let paths = self.paths(id);
        let pid = self
            .inner
            .vmm
            .find_process(&paths, rec.pid)
            .instrument(tracing::debug_span!("halt.find_process"))
            .await;
        if rec.state() == VmState::Failed && pid.is_none() {
            // A failed VM without a process has nothing to stop; it stays failed with its
            // reason until it is started or deleted.
            return Ok((rec, Some("the vm was not running".to_owned())));
        }
        let rec = if rec.state() == VmState::Stopping {
            rec
        } else {
            self.transition_and_emit(id, VmState::Stopping, None, EventKind::Stopping)
                .instrument(tracing::debug_span!("halt.stopping"))
                .await?
        };
        let mut note = None;
        match pid {
            None => {
                note = Some("the hypervisor process was already gone".to_owned());
            }
            Some(pid) => {
                let exited = match mode {
                    HaltMode::Force => {
                        note = Some("stopped by force (SIGKILL), without CtrlAltDel".to_owned());
                        false
                    }
                    HaltMode::Graceful => self.graceful(&rec, &paths, pid, &mut note).await,
                };
                if !exited && let Err(e) = self.kill_all(&paths, Some(pid)).await {
                    let reason = format!("stopping: {}", banger_bus::runtime::chain(&e));
                    self.transition_and_emit(id, VmState::Failed, Some(reason), EventKind::Failed)
                        .await?;
                    return Err(e.into());
                }
            }
        }
        let stopped = self.finish_stop(&rec, note.clone()).await?;
        Ok((stopped, note))
    }

    /// CtrlAltDel and the grace window. Returns whether the process exited by itself; when it
    /// did not, `note` says why the forced path follows.
    async fn graceful(
        &self,
        rec: &VmRecord,
        paths: &VmPaths,
        pid: u32,
        note: &mut Option<String>,
    ) -> bool {
        let grace = self.inner.config.stop_grace();
        let sent = self
            .inner
            .vmm
            .ctrl_alt_del(paths)
            .instrument(tracing::debug_span!("halt.ctrl_alt_del"))
            .await;
        if let Err(e) = sent {
            let cause = banger_bus::runtime::chain(&e);
            tracing::warn!(
                vm.id = %rec.id(), vm.name = %rec.info.name, pid,
                stage = "sending CtrlAltDel", error = %cause,
                "graceful stop failed; continuing with the forced stop"
            );
            *note = Some(format!(
                "CtrlAltDel could not be delivered ({cause}); the vm was stopped by force"
            ));
            return false;
        }
        if self
            .wait_exit(pid, grace)
            .instrument(tracing::debug_span!("halt.wait_exit"))
            .await
        {
            return true;
        }
        tracing::warn!(
            vm.id = %rec.id(), vm.name = %rec.info.name, pid,
            stage = "waiting for the guest to exit after CtrlAltDel", grace_ms = millis(grace),
            "the grace window passed; continuing with the forced stop"
        );
        *note = Some(format!(
            "the guest did not shut down within {} ms of CtrlAltDel; it was stopped by force",
            millis(grace)
        ));
        false
    }

    /// Whether `pid` exits within `limit`: the hypervisor boundary wakes on the exit itself
    /// (a pidfd), so a guest that honours CtrlAltDel ends the wait the moment its hypervisor
    /// is gone, not at the next look of a polling loop.
    async fn wait_exit(&self, pid: u32, limit: Duration) -> bool {
        self.inner.vmm.wait_exit(pid, limit).await
    }

    /// SIGKILLs the process holding `paths.api_sock` (trying `hint` first) and waits for it to
    /// go, then looks again: the forced path ends only when no live process holds the socket.
    pub(crate) async fn kill_all(
        &self,
        paths: &VmPaths,
        hint: Option<u32>,
    ) -> Result<(), KillError> {
        let vmm = &self.inner.vmm;
        let mut hint = hint.filter(|p| vmm.is_alive(*p));
        for _ in 0..KILL_ROUNDS {
            // The hint is trusted only when it is the socket's holder, or when the socket is
            // gone but the process still names it on its command line (we spawned it and it
            // has not bound it yet): `kill` checks that, so a reused pid is never signalled.
            let target = match vmm.find_process(paths, hint).await {
                Some(p) => p,
                None => match hint.take() {
                    Some(p) if vmm.is_alive(p) => p,
                    _ => return Ok(()),
                },
            };
            hint = None;
            let killed = vmm.kill(target, paths).map_err(KillError::Signal)?;
            if !killed {
                // Gone meanwhile, or the hint named another process by now (its pid reused):
                // left alone; the socket check below says whether anything is still ours.
                continue;
            }
            if !self.wait_exit(target, self.inner.config.kill_wait()).await {
                return Err(KillError::Survived {
                    pid: target,
                    waited_ms: self.inner.config.kill_wait_ms,
                });
            }
            tracing::info!(pid = target, socket = %paths.api_sock.display(), "hypervisor killed");
        }
        match vmm.find_process(paths, None).await {
            None => Ok(()),
            Some(pid) => Err(KillError::StillHeld {
                pid,
                socket: paths.api_sock.clone(),
                rounds: KILL_ROUNDS,
            }),
        }
    }

    /// Detaches a stopped VM's tap, retrying a few times: netd can fail transiently when many
    /// taps go at once (seen in the 20-VM stop bench: an interrupted netlink dump). A tap left
    /// behind is not fatal — netd also follows the `stopped` event and reconciles.
    async fn detach_with_retries(&self, req: DetachRequest) {
        let mut attempt = 1;
        loop {
            match self.inner.netd.detach(req.clone()).await {
                Ok(_) => return,
                // No lease: nothing is attached, so nothing to detach.
                Err(e) if e.code() == banger_proto::ErrorCode::NotFound => return,
                Err(e) if attempt < DETACH_ATTEMPTS => {
                    tracing::debug!(vm.id = %req.vm_id, attempt, error = %banger_bus::runtime::chain(&e), "detaching the tap; retrying");
                }
                Err(e) => {
                    tracing::warn!(vm.id = %req.vm_id, attempts = attempt, error = %banger_bus::runtime::chain(&e), "detaching the tap after stop");
                    return;
                }
            }
            tokio::time::sleep(DETACH_RETRY_DELAY * attempt).await;
            attempt += 1;
        }
    }

    /// The process is gone: remove its sockets, detach the tap, record `stopped`, publish.
    pub(crate) async fn finish_stop(
        &self,
        rec: &VmRecord,
        note: Option<String>,
    ) -> Result<VmRecord, RecordError> {
        self.finish_as(rec, VmState::Stopped, note).await
    }

    /// The process is gone: remove its sockets, detach the tap, record `end` (`stopped`, or
    /// `failed` for a VM whose guest or hypervisor died) with `reason`, publish.
    pub(crate) async fn finish_as(
        &self,
        rec: &VmRecord,
        end: VmState,
        reason: Option<String>,
    ) -> Result<VmRecord, RecordError> {
        let id = rec.id().clone();
        self.unwatch(&id);
        let paths = self.paths(&id);
        // The sockets and the tap are independent: both go at once.
        let sockets = tokio::task::spawn_blocking(move || remove_runtime_sockets(&paths))
            .instrument(tracing::debug_span!("halt.sockets"));
        let detach = async {
            if rec.info.network.is_some() || rec.state() != VmState::Stopped {
                let req = DetachRequest {
                    vm_id: id.clone(),
                    release: false,
                };
                self.detach_with_retries(req)
                    .instrument(tracing::debug_span!("halt.detach"))
                    .await;
            }
        };
        let (_, ()) = tokio::join!(sockets, detach);
        let stopped = self
            .modify_and_emit(&id, crate::watch::end_event(end), move |r| {
                r.info.state = end;
                r.info.network = None;
                r.info.reason = reason;
                r.pid = None;
                Ok(())
            })
            .instrument(tracing::debug_span!("halt.ended"))
            .await?;
        tracing::info!(vm.id = %id, vm.name = %stopped.info.name, state = %end, "vm ended");
        Ok(stopped)
    }
}
