//! `vm.stop`: CtrlAltDel, the grace window, then the forced path (see [`crate::halt`]).

use banger_proto::vm::{VmOpReply, VmRefRequest};

use crate::controller::Controller;
use crate::error::HaltError;
use crate::halt::HaltMode;

impl Controller {
    /// Stops a VM gracefully, forcing it when the guest does not shut down in time.
    pub async fn stop(&self, req: VmRefRequest) -> Result<VmOpReply, HaltError> {
        let _guard = self.lock(&req.id).await;
        let (rec, note) = self.halt(&req.id, HaltMode::Graceful).await?;
        Ok(VmOpReply::new(rec.info, note))
    }
}
