//! `vm.touch`: mark a VM as used now.

use banger_proto::vm::{VmOpReply, VmRefRequest};

use crate::controller::Controller;
use crate::error::RecordError;

impl Controller {
    /// Sets a VM's `touched_at_ms` to now.
    pub async fn touch(&self, req: VmRefRequest) -> Result<VmOpReply, RecordError> {
        let _guard = self.lock(&req.id).await;
        let now = banger_bus::now_ms();
        let rec = self
            .inner
            .db
            .modify(&req.id, move |r| {
                r.info.touched_at_ms = Some(now);
                Ok(())
            })
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(VmOpReply::new(rec.info, None))
    }
}
