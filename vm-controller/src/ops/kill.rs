//! `vm.kill`: the forced path at once: SIGKILL to the process found by its API socket.

use banger_proto::vm::{VmOpReply, VmRefRequest};

use crate::controller::Controller;
use crate::error::HaltError;
use crate::halt::HaltMode;

impl Controller {
    /// Kills a VM's hypervisor.
    pub async fn kill(&self, req: VmRefRequest) -> Result<VmOpReply, HaltError> {
        let _guard = self.lock(&req.id).await;
        let (rec, note) = self.halt(&req.id, HaltMode::Force).await?;
        Ok(VmOpReply::new(rec.info, note))
    }
}
