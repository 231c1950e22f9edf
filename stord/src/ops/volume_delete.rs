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

/// Handles one request.
pub async fn handle(
    st: Arc<Stord>,
    req: VolumeDeleteRequest,
) -> Result<VolumeDeleteReply, ApiError> {
    delete(st, req.vm_id).await
}
