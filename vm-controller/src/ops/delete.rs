//! `vm.delete`: stop if needed, then remove everything: volumes (stord retries transient busy
//! errors), the lease (netd detach with release), logs and sockets, and the record.

use banger_proto::ErrorCode;
use banger_proto::event::EventKind;
use banger_proto::net::DetachRequest;
use banger_proto::vm::{VmOpReply, VmRefRequest, VmState};

use super::wrong_state;
use crate::controller::Controller;
use crate::deps::DepError;
use crate::error::{Coded, HaltError, LookupError, RecordError, StateError};
use crate::halt::HaltMode;

/// Why a delete failed. When removing what the VM owns failed, the VM is `failed` with the
/// reason, and a later delete tries again.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// The VM could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// It is being deleted already.
    #[error(transparent)]
    State(#[from] StateError),
    /// Stopping it failed.
    #[error(transparent)]
    Halt(#[from] HaltError),
    /// Its record could not be updated or removed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// stord could not remove its volumes.
    #[error("removing the volumes")]
    Volumes(#[source] DepError),
    /// netd could not release its lease.
    #[error("releasing the lease")]
    Lease(#[source] DepError),
    /// Its log and runtime files could not be removed.
    #[error("removing the vm's files")]
    Files(#[source] tokio::task::JoinError),
}

impl Coded for DeleteError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Lookup(e) => e.code(),
            Self::State(e) => e.code(),
            Self::Halt(e) => e.code(),
            Self::Record(e) => e.code(),
            Self::Volumes(e) | Self::Lease(e) => e.code(),
            Self::Files(_) => ErrorCode::Internal,
        }
    }
}

impl Controller {
    /// Deletes a VM and everything it owns.
    pub async fn delete(&self, req: VmRefRequest) -> Result<VmOpReply, DeleteError> {
        let id = req.id;
        let guard = self.lock(&id).await;
        let rec = self.record(&id).await?;
        let note = match rec.state() {
            VmState::Running | VmState::Starting | VmState::Stopping => {
                self.halt(&id, HaltMode::Graceful).await?.1
            }
            VmState::Failed => {
                if self
                    .inner
                    .vmm
                    .find_process(&self.paths(&id), rec.pid)
                    .await
                    .is_some()
                {
                    self.halt(&id, HaltMode::Force).await?.1
                } else {
                    None
                }
            }
            VmState::Stopped | VmState::Creating => None,
            VmState::Deleting => return Err(wrong_state(&rec, "be deleted twice").into()),
        };
        let rec = self.record(&id).await?;
        let rec = if rec.state() == VmState::Failed {
            // Failed -> Deleting is allowed; a failed VM keeps its reason until it is gone.
            self.inner
                .db
                .transition(&id, VmState::Deleting, rec.info.reason.clone())
                .await
                .map_err(|e| self.store_error(e))?
        } else {
            self.inner
                .db
                .transition(&id, VmState::Deleting, None)
                .await
                .map_err(|e| self.store_error(e))?
        };
        if let Err(e) = self.remove_resources(&id).await {
            self.transition_and_emit(
                &id,
                VmState::Failed,
                Some(banger_bus::runtime::chain(&e)),
                EventKind::Failed,
            )
            .await?;
            return Err(e);
        }
        // The row goes and its `deleted` event is numbered in one write transaction.
        let db = &self.inner.db;
        let rec = self
            .inner
            .events
            .commit(EventKind::Deleted, |h| {
                let (info, vm) = (rec.info.clone(), id.clone());
                async move {
                    let (_, seq) = db
                        .remove_numbered(&vm, move |seq| h.post(&info, seq))
                        .await?;
                    Ok((rec, seq))
                }
            })
            .await
            .map_err(|e| self.store_error(e))?;
        tracing::info!(vm.id = %id, vm.name = %rec.info.name, "vm deleted");
        if self.inner.config.lab_name_check {
            self.inner.lab.release_name(&rec.info.name, &id).await;
        }
        self.inner.locks.forget(&id);
        drop(guard);
        if let Ok(mut seen) = self.inner.last_health.lock() {
            seen.remove(&id);
        }
        Ok(VmOpReply::new(rec.info, note))
    }

    async fn remove_resources(&self, id: &banger_proto::VmId) -> Result<(), DeleteError> {
        let inner = &self.inner;
        inner
            .stord
            .volume_delete(id)
            .await
            .map_err(DeleteError::Volumes)?;
        match inner
            .netd
            .detach(DetachRequest {
                vm_id: id.clone(),
                release: true,
            })
            .await
        {
            Ok(_) => {}
            // No lease (the create failed before netd attached, or an earlier delete released
            // it): nothing to release.
            Err(e) if e.code() == ErrorCode::NotFound => {
                tracing::debug!(vm.id = %id, "no lease to release");
            }
            Err(e) => return Err(DeleteError::Lease(e)),
        }
        let paths = self.paths(id);
        tokio::task::spawn_blocking(move || {
            crate::vmm::firecracker::remove_runtime_sockets(&paths);
            let _ = std::fs::remove_dir_all(&paths.run_dir);
            let _ = std::fs::remove_dir_all(&paths.log_dir);
        })
        .await
        .map_err(DeleteError::Files)?;
        Ok(())
    }
}

#[cfg(test)]
impl crate::error::Samples for DeleteError {
    fn samples() -> Vec<Self> {
        use banger_proto::op::{net, store};

        use crate::error::samples::{dep_errors, join_error};
        let mut all: Vec<Self> = Vec::new();
        all.extend(LookupError::samples().into_iter().map(Self::Lookup));
        all.extend(StateError::samples().into_iter().map(Self::State));
        all.extend(HaltError::samples().into_iter().map(Self::Halt));
        all.extend(RecordError::samples().into_iter().map(Self::Record));
        all.extend(
            dep_errors::<store::VolumeDelete>()
                .into_iter()
                .map(Self::Volumes),
        );
        all.extend(
            dep_errors::<net::Detach>()
                .into_iter()
                // No lease is nothing to release, not an error.
                .filter(|e| e.code() != ErrorCode::NotFound)
                .map(Self::Lease),
        );
        all.push(Self::Files(join_error()));
        all
    }
}
