//! Reconcile: converge the records on the processes that really run.
//!
//! At start-up and then periodically, every VM whose state may have a process is checked by its
//! API socket (never by the stored pid alone):
//!
//! - `running` with a live process: re-adopted (the pid is refreshed). A controller restart
//!   therefore never stops running VMs.
//! - `running` without a process: the VM ends through the normal stop path (sockets removed,
//!   tap detached, event, which netd and dnsd follow) as `failed` with the hypervisor's exit
//!   status and its log's last error, or `stopped` after a clean exit ([`crate::watch`]
//!   usually gets there first).
//! - `starting`/`stopping` without a process: the VM becomes `stopped` the same way.
//! - `starting` with a process but nobody booting it (the controller died mid-start): killed
//!   and `failed`, since its configuration may be half done.
//! - `stopping` with a process and nobody stopping it: the stop is finished by force.
//! - `creating` or `deleting` with nobody working on it: `failed`, so the user can delete (or
//!   start) it again.
//!
//! Each VM is handled under its own lock, taken with `try_lock`: a VM an operation is working
//! on right now is skipped this round, which is exactly when its state is expected to be in
//! flux.

use banger_proto::event::EventKind;
use banger_proto::vm::VmState;

use crate::controller::Controller;
use crate::error::HaltError;
use crate::halt::HaltMode;
use crate::store::VmRecord;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// VMs whose process was found and kept.
    pub adopted: usize,
    /// VMs found without a process and marked stopped.
    pub stopped: usize,
    /// VMs marked failed (interrupted create, start or delete).
    pub failed: usize,
    /// VMs skipped because an operation held their lock.
    pub busy: usize,
}

impl Controller {
    /// One reconcile pass over every VM of this host.
    pub async fn reconcile(&self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let records = match self.inner.db.list().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %banger_bus::runtime::chain(&e), "reconcile: listing vms");
                return report;
            }
        };
        for rec in records {
            let Some(_guard) = self.try_lock(rec.id()) else {
                report.busy += 1;
                continue;
            };
            // Re-read under the lock: an operation may have finished since the list.
            let Ok(Some(rec)) = self.inner.db.find(rec.id()).await else {
                continue;
            };
            self.reconcile_one(rec, &mut report).await;
        }
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconcile pass");
        }
        report
    }

    /// Brings the lab's name directory in line with this host's VMs, when a step could not
    /// update it (and once at start-up); see [`crate::names`].
    pub async fn sync_names(&self) {
        if !self.inner.config.lab_name_check {
            return;
        }
        match self.inner.db.list().await {
            Ok(records) => {
                let local = records
                    .into_iter()
                    .map(|r| (r.info.name, r.info.id))
                    .collect();
                self.inner.lab.sync_names(local).await;
            }
            Err(e) => {
                tracing::warn!(error = %banger_bus::runtime::chain(&e), "name directory sync: listing vms");
            }
        }
    }

    /// Kills the process of a start nobody finishes, detaches its tap and marks it failed.
    async fn fail_interrupted_start(&self, rec: &VmRecord, pid: u32) -> Result<(), HaltError> {
        let id = rec.id().clone();
        let paths = self.paths(&id);
        self.kill_all(&paths, Some(pid)).await?;
        let p = paths.clone();
        let _ = tokio::task::spawn_blocking(move || {
            crate::vmm::firecracker::remove_runtime_sockets(&p);
        })
        .await;
        let req = banger_proto::net::DetachRequest {
            vm_id: id.clone(),
            release: false,
        };
        if let Err(e) = self.inner.netd.detach(req).await {
            tracing::warn!(vm.id = %id, error = %banger_bus::runtime::chain(&e), "reconcile: detaching the tap");
        }
        self.modify_and_emit(&id, EventKind::Failed, |r| {
            r.info.state = VmState::Failed;
            r.info.reason = Some("the controller stopped while the vm was starting".into());
            r.info.network = None;
            r.pid = None;
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn reconcile_one(&self, rec: VmRecord, report: &mut ReconcileReport) {
        let id = rec.id().clone();
        let state = rec.state();
        let result: Result<(), HaltError> = match state {
            VmState::Creating | VmState::Deleting => {
                report.failed += 1;
                let reason = format!("the controller stopped while the vm was {state}");
                self.transition_and_emit(&id, VmState::Failed, Some(reason), EventKind::Failed)
                    .await
                    .map(|_| ())
                    .map_err(HaltError::from)
            }
            VmState::Stopped => Ok(()),
            VmState::Running | VmState::Starting | VmState::Stopping | VmState::Failed => {
                let paths = self.paths(&id);
                let pid = self.inner.vmm.find_process(&paths, rec.pid).await;
                match (state, pid) {
                    (VmState::Running, Some(pid)) => {
                        report.adopted += 1;
                        self.watch_adopted(&id).await;
                        if rec.pid == Some(pid) {
                            Ok(())
                        } else {
                            tracing::info!(vm.id = %id, vm.name = %rec.info.name, pid, "re-adopted a running vm");
                            self.inner
                                .db
                                .modify(&id, move |r| {
                                    r.pid = Some(pid);
                                    Ok(())
                                })
                                .await
                                .map(|_| ())
                                .map_err(|e| self.store_error(e).into())
                        }
                    }
                    (VmState::Failed, None) => Ok(()),
                    (VmState::Starting, Some(pid)) => {
                        report.failed += 1;
                        self.fail_interrupted_start(&rec, pid).await
                    }
                    (VmState::Running, None) => {
                        // Failed or stopped, with the exit status and the log's last error
                        // (see `watch`), when the watch has not ended it already.
                        report.stopped += 1;
                        self.end_exited_hypervisor(&rec)
                            .await
                            .map(|_| ())
                            .map_err(HaltError::from)
                    }
                    (_, None) => {
                        report.stopped += 1;
                        tracing::info!(vm.id = %id, vm.name = %rec.info.name, %state, "the hypervisor process is gone; marking the vm stopped");
                        self.finish_stop(&rec, None)
                            .await
                            .map(|_| ())
                            .map_err(HaltError::from)
                    }
                    (_, Some(_)) => {
                        // Stopping (or a failed VM whose process lives on): finish the stop.
                        report.stopped += 1;
                        self.halt(&id, HaltMode::Force).await.map(|_| ())
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(vm.id = %id, error = %banger_bus::runtime::chain(&e), "reconcile");
        }
    }
}
