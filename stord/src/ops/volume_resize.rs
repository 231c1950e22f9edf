//! `store.volume.resize`: grow a VM's work disk (shrinking is refused). The controller calls it
//! only while the VM is stopped: the file system is resized offline.

use std::path::Path;
use std::sync::Arc;

use banger_proto::store::{VolumeResizeRequest, VolumeSet};
use banger_proto::{ApiError, ErrorCode, VmId};

use crate::db::DbError;
use crate::state::{Stord, blocking, chain, volume_set};
use crate::workdisk::{self, WorkDiskError};

/// Why a resize failed.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// The VM has no volumes.
    #[error("VM {0} has no volumes on this host")]
    NotFound(VmId),
    /// Growing failed (or the request would shrink).
    #[error("resizing the work disk of VM {vm}")]
    WorkDisk {
        /// The VM.
        vm: VmId,
        /// Why.
        #[source]
        source: WorkDiskError,
    },
    /// The registry failed.
    #[error("recording the new size")]
    Db(#[source] DbError),
}

impl From<ResizeError> for ApiError {
    fn from(e: ResizeError) -> Self {
        let code = match &e {
            ResizeError::NotFound(_) => ErrorCode::NotFound,
            ResizeError::WorkDisk {
                source: WorkDiskError::Shrink { .. },
                ..
            } => ErrorCode::InvalidArgument,
            ResizeError::WorkDisk { .. } | ResizeError::Db(_) => ErrorCode::Internal,
        };
        ApiError::new(code, chain(&e))
    }
}

/// Grows `req.vm_id`'s work disk. The caller holds the VM's lock.
pub fn apply(st: &Stord, req: &VolumeResizeRequest) -> Result<VolumeSet, ResizeError> {
    let vm = &req.vm_id;
    let mut v = st
        .db
        .volume(vm)
        .map_err(ResizeError::Db)?
        .ok_or_else(|| ResizeError::NotFound(vm.clone()))?;
    let image = st
        .db
        .image(&v.image)
        .map_err(ResizeError::Db)?
        .ok_or_else(|| ResizeError::Db(DbError::Corrupt(format!("volume {vm} has no image"))))?;
    let grew = workdisk::grow(Path::new(&v.work_disk_path), u64::from(req.disk_mib.get()))
        .map_err(|source| ResizeError::WorkDisk {
            vm: vm.clone(),
            source,
        })?;
    if grew {
        st.db
            .set_disk_mib(vm, req.disk_mib)
            .map_err(ResizeError::Db)?;
        tracing::info!(vm.id = %vm, from = v.disk_mib.get(), to = req.disk_mib.get(), "work disk grown");
        v.disk_mib = req.disk_mib;
    }
    Ok(volume_set(&v, &image))
}

/// Handles one request.
pub async fn handle(st: Arc<Stord>, req: VolumeResizeRequest) -> Result<VolumeSet, ApiError> {
    let guard = st.locks.lock(&req.vm_id).await;
    blocking("resizing a work disk", move || {
        let _guard = guard;
        Ok(apply(&st, &req)?)
    })
    .await
}
