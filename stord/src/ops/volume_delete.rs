//! `store.volume.delete`: remove a VM's root (and the devices behind it), its work disk and its
//! record. Idempotent: deleting what is not there succeeds with `removed: false`.
//!
//! Busy devices are retried with bounded backoff (see [`crate::retry::Backoff::REMOVAL`]); when
//! removal gives up, the record is kept, so a later delete (or the next start-up's
//! reconciliation) finishes the job, and the error names the last failure. Also used by the
//! reaction to `deleted` events.

use std::path::Path;
use std::sync::Arc;

use banger_proto::store::{BackendKind, VolumeDeleteReply, VolumeDeleteRequest};
use banger_proto::{ApiError, ErrorCode, VmId};

use crate::backend::{BackendError, remove_file_retrying};
use crate::db::DbError;
use crate::retry::Backoff;
use crate::state::{Stord, backend_of, blocking, chain};
use crate::workdisk::WORK_FILE;

/// Why a VM's volumes could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// The root (or a device behind it) could not be removed.
    #[error("removing the root of VM {vm}")]
    Root {
        /// The VM.
        vm: VmId,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// The work disk or the directory could not be removed.
    #[error("removing {path}")]
    Files {
        /// What.
        path: String,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// The registry failed.
    #[error("forgetting the volumes")]
    Db(#[source] DbError),
}

impl From<DeleteError> for ApiError {
    fn from(e: DeleteError) -> Self {
        let code = match &e {
            // Still busy after the retries: trying again later may work.
            DeleteError::Root { source, .. } | DeleteError::Files { source, .. }
                if matches!(source, BackendError::GaveUp { .. }) =>
            {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, chain(&e))
    }
}

/// Removes `vm`'s volumes. The caller holds the VM's lock.
pub fn apply(st: &Stord, vm: &VmId, policy: Backoff) -> Result<VolumeDeleteReply, DeleteError> {
    let dir = st.dirs.vm_dir(vm);
    let record = st.db.volume(vm).map_err(DeleteError::Db)?;
    let kind = match &record {
        Some(v) => Some(backend_of(v).map_err(DeleteError::Db)?),
        None => None,
    };
    if record.is_none() && !dir.exists() && !has_devices(st, vm) {
        return Ok(VolumeDeleteReply {
            removed: false,
            attempts: 0,
        });
    }
    // Without a record (debris of a crash) remove whatever any back-end could have made.
    let kinds: Vec<BackendKind> = match kind {
        Some(k) => vec![k],
        None => st.backends.supported(),
    };
    let mut attempts = 1;
    for kind in kinds {
        let backend = st
            .backends
            .for_kind(kind)
            .map_err(|source| DeleteError::Root {
                vm: vm.clone(),
                source,
            })?;
        // The image path matters only when creating; removal never reads it.
        let spec = st.spec(vm, Path::new("/"), &dir);
        let a = backend
            .remove(&spec, policy)
            .map_err(|source| DeleteError::Root {
                vm: vm.clone(),
                source,
            })?;
        attempts = attempts.max(a);
    }
    let work = dir.join(WORK_FILE);
    let _ = std::fs::remove_file(crate::backend::staging_path(&work));
    let a = remove_file_retrying(&work, policy).map_err(|source| DeleteError::Files {
        path: work.display().to_string(),
        source,
    })?;
    attempts = attempts.max(a);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DeleteError::Files {
                path: dir.display().to_string(),
                source: BackendError::io("removing", &dir, e),
            });
        }
    }
    st.db.delete_volume(vm).map_err(DeleteError::Db)?;
    tracing::info!(vm.id = %vm, attempts, "volumes deleted");
    Ok(VolumeDeleteReply {
        removed: true,
        attempts,
    })
}

/// Whether any dm or loop device of `vm` exists.
fn has_devices(st: &Stord, vm: &VmId) -> bool {
    let mine = |name: &str| crate::backend::dm::owner_of(&st.state_tag, name).as_ref() == Some(vm);
    let dms = st.devices.list_dm().unwrap_or_default();
    let loops = st.devices.list_loops().unwrap_or_default();
    dms.iter().any(|(n, _)| mine(n)) || loops.iter().any(|l| mine(&l.tag))
}

/// Deletes `vm`'s volumes under its lock (the bus operation and the event reaction).
pub async fn delete(st: Arc<Stord>, vm: VmId) -> Result<VolumeDeleteReply, ApiError> {
    let guard = st.locks.lock(&vm).await;
    blocking("deleting volumes", move || {
        let _guard = guard;
        Ok(apply(&st, &vm, Backoff::REMOVAL)?)
    })
    .await
}

/// Whether `vm` has neither a record nor a directory: what a completed delete leaves. Cheap (one
/// registry read and one `stat`, no device listing).
pub fn already_removed(st: &Stord, vm: &VmId) -> Result<bool, DeleteError> {
    Ok(st.db.volume(vm).map_err(DeleteError::Db)?.is_none() && !st.dirs.vm_dir(vm).exists())
}

/// The reaction to a `deleted` event: the controller calls `volume.delete` itself before it
/// publishes `deleted`, so the volumes are normally gone and the cheap check
/// ([`already_removed`]) ends it without touching a device. A delete that was missed (or
/// failed) is finished as [`delete`] does. Debris without a record or a directory (devices of
/// a crash) is start-up reconciliation's. Returns `None` when there was nothing to do.
pub async fn catch_up(st: Arc<Stord>, vm: VmId) -> Result<Option<VolumeDeleteReply>, ApiError> {
    let guard = st.locks.lock(&vm).await;
    blocking("deleting volumes", move || {
        let _guard = guard;
        if already_removed(&st, &vm)? {
            return Ok(None);
        }
        Ok(Some(apply(&st, &vm, Backoff::REMOVAL)?))
    })
    .await
}

/// Handles one request.
pub async fn handle(
    st: Arc<Stord>,
    req: VolumeDeleteRequest,
) -> Result<VolumeDeleteReply, ApiError> {
    delete(st, req.vm_id).await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use banger_proto::store::ImageInfo;
    use banger_proto::{ImageName, MemMib, VmId};

    use super::*;
    use crate::backend::dm::fake::FakeDevices;
    use crate::backend::dm::{DeviceNames, SnapshotTable};
    use crate::config::StordFile;
    use crate::db::{ImageRow, VolumeRow};
    use crate::sys::loopdev::LoopEntry;

    fn id(n: u8) -> VmId {
        VmId::new(format!("{n:032x}")).unwrap()
    }

    /// A stord on fake devices with `vms`' dm-snapshot volumes in place: record, directory,
    /// work disk, dm device and loops.
    fn stord_with(vms: &[VmId]) -> (tempfile::TempDir, Arc<FakeDevices>, Arc<Stord>) {
        let dir = tempfile::tempdir().unwrap();
        let devices = Arc::new(FakeDevices::default());
        let st = Stord::open(
            dir.path().join("stord"),
            StordFile::default().resolve().unwrap(),
            devices.clone(),
        )
        .unwrap();
        st.db
            .insert_image(&ImageRow {
                info: ImageInfo {
                    name: ImageName::new("base").unwrap(),
                    kernel: "/k".into(),
                    initrd: None,
                    rootfs: "/r".into(),
                    kernel_args: String::new(),
                    default_disk_mib: MemMib::new(8).unwrap(),
                    rootfs_bytes: 0,
                    created_at_ms: 0,
                },
                rootfs_mtime_ns: 0,
            })
            .unwrap();
        for (i, vm) in vms.iter().enumerate() {
            let vm_dir = st.dirs.vm_dir(vm);
            std::fs::create_dir_all(&vm_dir).unwrap();
            std::fs::write(vm_dir.join(WORK_FILE), b"").unwrap();
            st.db
                .insert_volume(&VolumeRow {
                    vm_id: vm.clone(),
                    image: ImageName::new("base").unwrap(),
                    backend: "dm-snapshot".into(),
                    root_path: format!("/dev/dm-{i}"),
                    work_disk_path: vm_dir.join(WORK_FILE).display().to_string(),
                    disk_mib: MemMib::new(8).unwrap(),
                    created_at_ms: 0,
                })
                .unwrap();
            let names = DeviceNames::new(&st.state_tag, vm);
            let n = u32::try_from(i).unwrap() * 2;
            let mut f = devices.state();
            f.dms.push((
                names.dm.clone(),
                n,
                SnapshotTable::new(512, "7:0".into(), "7:1".into()),
            ));
            for (number, tag) in [(n, &names.origin_tag), (n + 1, &names.cow_tag)] {
                f.loops.push(LoopEntry {
                    number,
                    tag: tag.clone(),
                    backing_file: PathBuf::from("/x"),
                });
            }
        }
        (dir, devices, Arc::new(st))
    }

    #[tokio::test]
    async fn a_deleted_event_after_the_controllers_delete_touches_no_device() {
        let vm = id(1);
        let (_dir, devices, st) = stord_with(std::slice::from_ref(&vm));
        // The controller's `volume.delete`, on the hot path.
        assert!(delete(st.clone(), vm.clone()).await.unwrap().removed);
        assert!(devices.state().dms.is_empty());
        {
            let mut f = devices.state();
            f.calls.clear();
            f.lists = 0;
        }
        // The `deleted` event that follows: the cheap check ends it.
        assert_eq!(catch_up(st.clone(), vm.clone()).await.unwrap(), None);
        let f = devices.state();
        assert!(f.calls.is_empty(), "{:?}", f.calls);
        assert_eq!(f.lists, 0, "no device listing");
    }

    #[tokio::test]
    async fn a_deleted_event_whose_delete_was_missed_removes_the_volumes() {
        let (gone, kept) = (id(1), id(2));
        let (_dir, devices, st) = stord_with(&[gone.clone(), kept.clone()]);
        let reply = catch_up(st.clone(), gone.clone()).await.unwrap();
        assert!(reply.is_some_and(|r| r.removed));
        assert!(st.db.volume(&gone).unwrap().is_none());
        assert!(!st.dirs.vm_dir(&gone).exists());
        let f = devices.state();
        let kept_names = DeviceNames::new(&st.state_tag, &kept);
        let dms: Vec<&str> = f.dms.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(
            dms,
            [kept_names.dm.as_str()],
            "only the deleted VM's device went"
        );
        assert_eq!(f.loops.len(), 2, "{:?}", f.loops);
        drop(f);
        assert!(st.db.volume(&kept).unwrap().is_some());
    }
}
