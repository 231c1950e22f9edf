//! `vm.get` and `vm.list`: reads of the records (no lock: each read is one consistent row).

use banger_proto::ApiError;
use banger_proto::vm::{ListVmsReply, VmInfo, VmRefRequest};

use crate::controller::Controller;

impl Controller {
    /// One VM.
    pub async fn get(&self, req: VmRefRequest) -> Result<VmInfo, ApiError> {
        Ok(self.record(&req.id).await?.info)
    }

    /// Every VM of this host, by name.
    pub async fn list(&self) -> Result<ListVmsReply, ApiError> {
        let vms = self
            .inner
            .db
            .list()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(ListVmsReply {
            host: self.inner.host.clone(),
            vms: vms.into_iter().map(|r| r.info).collect(),
        })
    }
}
