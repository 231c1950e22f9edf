//! `vm.restart`: stop (gracefully, then forced) and start, under one hold of the VM's lock so
//! nothing runs in between.

use banger_proto::vm::{VmOpReply, VmRefRequest, VmState};

use super::start::StartError;
use super::wrong_state;
use crate::boot::BootKind;
use crate::controller::Controller;
use crate::halt::HaltMode;

impl Controller {
    /// Restarts a VM (starts it when it was stopped).
    pub async fn restart(&self, req: VmRefRequest) -> Result<VmOpReply, StartError> {
        let _guard = self.lock(&req.id).await;
        let rec = self.record(&req.id).await?;
        let note = match rec.state() {
            VmState::Running | VmState::Starting | VmState::Stopping | VmState::Failed => {
                self.halt(&req.id, HaltMode::Graceful).await?.1
            }
            VmState::Stopped => None,
            _ => return Err(wrong_state(&rec, "be restarted").into()),
        };
        let rec = self.boot(&req.id, BootKind::Start).await?;
        Ok(VmOpReply::new(rec.info, note))
    }
}
