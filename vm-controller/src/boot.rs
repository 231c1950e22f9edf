//! Booting a VM: the shared second half of `create` and `start`.
//!
//! Volumes from stord (created, or the existing set returned) and the lease and tap from netd,
//! asked for at once, then the hypervisor spawned and configured, `InstanceStart`. Each step that succeeded is recorded in
//! an [`Undo`]; when a later step fails, the earlier ones are undone in reverse order and the
//! record becomes `failed` with the reason, so a failed boot never leaves a half-built VM: no
//! process, no socket, no tap — and, for a VM being created, no volumes and no lease either. A
//! VM that already existed keeps its volumes (its work disk is the user's data) and its lease.

use std::path::PathBuf;

use banger_proto::VmId;
use banger_proto::event::EventKind;
use banger_proto::net::{AttachRequest, DetachRequest};
use banger_proto::store::{VolumeCreateRequest, VolumeSet};
use banger_proto::vm::{VmNetwork, VmState};
use tracing::Instrument as _;

use crate::controller::Controller;
use crate::error::BootError;
use crate::store::VmRecord;
use crate::vmm::LaunchSpec;
use crate::vmm::firecracker::remove_runtime_sockets;

/// What a boot has done so far, to undo on failure.
#[derive(Debug, Default)]
struct Undo {
    /// stord made (or returned) the volumes.
    volumes: bool,
    /// netd attached a tap.
    attached: bool,
    /// The hypervisor was spawned with this pid.
    pid: Option<u32>,
}

/// Whether the VM being booted is new (its volumes and lease go on failure) or existing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BootKind {
    /// First boot, from `create`.
    Create,
    /// A later boot, from `start` or `restart`.
    Start,
}

impl Controller {
    /// Boots VM `id` (the caller holds its lock; the VM is `creating`, `stopped` or `failed`).
    /// On failure the VM is `failed` with the reason and the error is returned.
    pub(crate) async fn boot(&self, id: &VmId, kind: BootKind) -> Result<VmRecord, BootError> {
        let rec = self
            .transition_and_emit(id, VmState::Starting, None, EventKind::Starting)
            .instrument(tracing::debug_span!("boot.starting"))
            .await?;
        let mut undo = Undo::default();
        self.forget_health(id);
        let mut log_ends = (0, 0);
        match self.boot_steps(&rec, &mut undo, &mut log_ends).await {
            Ok(rec) => {
                self.watch(rec.id(), log_ends);
                self.probe_health(rec.id(), rec.info.started_at_ms);
                tracing::info!(vm.id = %rec.id(), vm.name = %rec.info.name, pid = ?rec.pid, "vm running");
                Ok(rec)
            }
            Err(e) => {
                let reason = banger_bus::runtime::chain(&e);
                tracing::warn!(vm.id = %id, vm.name = %rec.info.name, error = %reason, "boot failed; unwinding");
                self.unwind(&rec, kind, undo).await;
                self.modify_and_emit(id, EventKind::Failed, move |r| {
                    r.info.state = VmState::Failed;
                    r.info.reason = Some(reason);
                    r.info.network = None;
                    r.pid = None;
                    Ok(())
                })
                .await?;
                Err(e)
            }
        }
    }

    /// The boot after the `starting` record: volumes, network, hypervisor. `log_ends` gets
    /// where this boot's console and hypervisor log start, read before the hypervisor runs.
    async fn boot_steps(
        &self,
        rec: &VmRecord,
        undo: &mut Undo,
        log_ends: &mut (u64, u64),
    ) -> Result<VmRecord, BootError> {
        let inner = &self.inner;
        let id = rec.id().clone();
        // stord's volumes, netd's lease and tap, and where the logs end are independent: asked
        // for at once, each recorded in `undo` as it succeeded, so a failure of one undoes the
        // others exactly as a failure in sequence would.
        let attach = inner
            .netd
            .attach(AttachRequest {
                vm_id: id.clone(),
                vm_name: rec.info.name.clone(),
                port_forwards: rec.info.port_forwards.clone(),
            })
            .instrument(tracing::debug_span!("boot.attach"));
        let ctl = self.clone();
        let key = id.clone();
        // This boot's console and log output start here: the watch reads from there on.
        let ends = tokio::task::spawn_blocking(move || crate::watch::log_ends(&ctl, &key))
            .instrument(tracing::debug_span!("boot.log_ends"));
        let ((made, volumes), lease, ends) = tokio::join!(self.volumes(rec), attach, ends);
        undo.volumes = made;
        undo.attached = lease.is_ok();
        *log_ends = ends.unwrap_or_default();
        let volumes = volumes?;
        let lease = lease.map_err(BootError::Network)?;
        let network = VmNetwork {
            ip: lease.ip.clone(),
            mac: lease.mac.clone(),
            tap: lease.tap.clone(),
        };

        let boot_args = format!("{} {}", volumes.kernel_args.trim(), lease.kernel_ip_arg)
            .trim()
            .to_owned();
        let spec = LaunchSpec {
            name: rec.info.name.to_string(),
            cpus: rec.info.cpus.get(),
            memory_mib: rec.info.memory_mib.get(),
            kernel: PathBuf::from(&volumes.kernel),
            initrd: volumes.initrd.as_ref().map(PathBuf::from),
            boot_args,
            root_path: PathBuf::from(&volumes.root_path),
            work_disk_path: PathBuf::from(&volumes.work_disk_path),
            tap: lease.tap.clone(),
            mac: lease.mac.clone(),
            vsock_cid: rec.vsock_cid,
            paths: self.paths(&id),
        };
        let pid = inner
            .vmm
            .launch(&spec)
            .instrument(tracing::debug_span!("boot.launch"))
            .await
            .map_err(BootError::Spawn)?;
        undo.pid = Some(pid);
        // The lease and the pid in one write. Until it commits, a crash leaves a `starting`
        // record without them: reconcile then detaches the tap unconditionally and finds the
        // hypervisor by its API socket, so neither needed its own transaction.
        inner
            .db
            .modify(&id, move |r| {
                r.info.network = Some(network);
                r.pid = Some(pid);
                Ok(())
            })
            .instrument(tracing::debug_span!("boot.record_launch"))
            .await
            .map_err(|e| self.store_error(e))?;
        inner
            .vmm
            .configure_and_start(&spec)
            .instrument(tracing::debug_span!("boot.configure"))
            .await
            .map_err(BootError::Configure)?;
        let now = banger_bus::now_ms();
        self.modify_and_emit(&id, EventKind::Started, move |r| {
            r.info.state = VmState::Running;
            r.info.started_at_ms = Some(now);
            r.info.reason = None;
            Ok(())
        })
        .instrument(tracing::debug_span!("boot.started"))
        .await
        .map_err(Into::into)
    }

    /// The VM's volumes from stord, grown when `vm set --disk` asked for a larger work disk
    /// since the last boot; and whether stord made (or returned) them, for the undo.
    async fn volumes(&self, rec: &VmRecord) -> (bool, Result<VolumeSet, BootError>) {
        let stord = &self.inner.stord;
        let made = stord
            .volume_create(VolumeCreateRequest {
                vm_id: rec.id().clone(),
                image: rec.info.image.clone(),
                disk_mib: Some(rec.info.disk_mib),
            })
            .instrument(tracing::debug_span!("boot.volumes"))
            .await;
        let volumes = match made {
            Ok(v) => v,
            Err(e) => return (false, Err(BootError::Volumes(e))),
        };
        if volumes.disk_mib.get() >= rec.info.disk_mib.get() {
            return (true, Ok(volumes));
        }
        // `vm set --disk` is applied here, on the next start.
        let grown = stord
            .volume_resize(rec.id(), rec.info.disk_mib)
            .await
            .map_err(BootError::GrowDisk);
        (true, grown)
    }

    /// Undoes what a failed boot did, in reverse order. Failures here are logged: the reply
    /// already carries the boot's own error, and reconcile (here and in netd) catches the rest.
    async fn unwind(&self, rec: &VmRecord, kind: BootKind, undo: Undo) {
        let inner = &self.inner;
        let id = rec.id();
        let paths = self.paths(id);
        if let Some(pid) = undo.pid {
            if let Err(e) = self.kill_all(&paths, Some(pid)).await {
                tracing::warn!(vm.id = %id, error = %banger_bus::runtime::chain(&e), "unwind: killing the hypervisor");
            }
            let p = paths.clone();
            let _ = tokio::task::spawn_blocking(move || remove_runtime_sockets(&p)).await;
        }
        if undo.attached {
            let req = DetachRequest {
                vm_id: id.clone(),
                release: kind == BootKind::Create,
            };
            if let Err(e) = inner.netd.detach(req).await {
                tracing::warn!(vm.id = %id, error = %banger_bus::runtime::chain(&e), "unwind: detaching the network");
            }
        }
        if undo.volumes
            && kind == BootKind::Create
            && let Err(e) = inner.stord.volume_delete(id).await
        {
            tracing::warn!(vm.id = %id, error = %banger_bus::runtime::chain(&e), "unwind: deleting the volumes");
        }
    }
}
