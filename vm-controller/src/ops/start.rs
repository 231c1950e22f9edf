//! `vm.start`: boot a `stopped` or `failed` VM; a running one is returned as is.

use banger_proto::ApiError;
use banger_proto::vm::{VmOpReply, VmRefRequest, VmState};

use super::wrong_state;
use crate::boot::BootKind;
use crate::controller::Controller;
use crate::halt::HaltMode;

impl Controller {
    /// Starts a VM.
    pub async fn start(&self, req: VmRefRequest) -> Result<VmOpReply, ApiError> {
        let _guard = self.lock(&req.id).await;
        let rec = self.record(&req.id).await?;
        match rec.state() {
            VmState::Running => {
                return Ok(VmOpReply {
                    vm: rec.info,
                    note: Some("the vm was already running".to_owned()),
                });
            }
            VmState::Stopped => {}
            VmState::Failed => {
                // A failed VM may still have a process (a failed stop): clear it first.
                if self
                    .inner
                    .vmm
                    .find_process(&self.paths(&req.id), rec.pid)
                    .await
                    .is_some()
                {
                    self.halt(&req.id, HaltMode::Force).await?;
                }
            }
            _ => return Err(wrong_state(&rec, "be started")),
        }
        let rec = self.boot(&req.id, BootKind::Start).await?;
        Ok(VmOpReply {
            vm: rec.info,
            note: None,
        })
    }
}
