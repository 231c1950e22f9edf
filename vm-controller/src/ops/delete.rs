//! `vm.delete`: stop if needed, then remove everything: volumes (stord retries transient busy
//! errors), the lease (netd detach with release), logs and sockets, and the record.

use banger_proto::ApiError;
use banger_proto::ErrorCode;
use banger_proto::event::EventKind;
use banger_proto::net::DetachRequest;
use banger_proto::vm::{VmOpReply, VmRefRequest, VmState};

use super::wrong_state;
use crate::boot::step;
use crate::controller::Controller;
use crate::halt::HaltMode;

impl Controller {
    /// Deletes a VM and everything it owns.
    pub async fn delete(&self, req: VmRefRequest) -> Result<VmOpReply, ApiError> {
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
            VmState::Deleting => return Err(wrong_state(&rec, "be deleted twice")),
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
                Some(e.message.clone()),
                EventKind::Failed,
            )
            .await?;
            return Err(e);
        }
        // The row goes and its `deleted` event is numbered in one write transaction.
        let removed = self.inner.db.remove_numbered(&id);
        let rec = self
            .inner
            .events
            .commit(EventKind::Deleted, async move {
                let (_, seq) = removed.await?;
                Ok((rec, seq))
            })
            .await
            .map_err(|e| self.store_error(e))?;
        tracing::info!(vm.id = %id, vm.name = %rec.info.name, "vm deleted");
        self.inner.locks.forget(&id);
        drop(guard);
        if let Ok(mut seen) = self.inner.last_health.lock() {
            seen.remove(&id);
        }
        Ok(VmOpReply { vm: rec.info, note })
    }

    async fn remove_resources(&self, id: &banger_proto::VmId) -> Result<(), ApiError> {
        let inner = &self.inner;
        inner
            .stord
            .volume_delete(id)
            .await
            .map_err(|e| step("removing the volumes", e.into()))?;
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
            Err(e) if e.code == ErrorCode::NotFound => {
                tracing::debug!(vm.id = %id, "no lease to release");
            }
            Err(e) => return Err(step("releasing the lease", e.into())),
        }
        let paths = self.paths(id);
        tokio::task::spawn_blocking(move || {
            crate::vmm::firecracker::remove_runtime_sockets(&paths);
            let _ = std::fs::remove_dir_all(&paths.run_dir);
            let _ = std::fs::remove_dir_all(&paths.log_dir);
        })
        .await
        .map_err(|e| ApiError::internal(format!("removing the vm's files: {e}")))?;
        Ok(())
    }
}
