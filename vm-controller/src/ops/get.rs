//! `vm.get` and `vm.list`: reads of the records (no lock: each read is one consistent row).

use banger_proto::ApiError;
use banger_proto::vm::{ListVmsReply, ListVmsRequest, VmInfo, VmRefRequest};

use crate::controller::Controller;

impl Controller {
    /// One VM.
    pub async fn get(&self, req: VmRefRequest) -> Result<VmInfo, ApiError> {
        Ok(self.record(&req.id).await?.info)
    }

    /// The VMs of this host the request's refs could name (every VM when it has none), by
    /// name. The caller resolves the refs: this only keeps the answer small.
    pub async fn list(&self, req: ListVmsRequest) -> Result<ListVmsReply, ApiError> {
        let vms = self
            .inner
            .db
            .list()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(ListVmsReply::new(
            self.inner.host.clone(),
            vms.into_iter()
                .map(|r| r.info)
                .filter(|v| req.wants(v))
                .collect(),
        ))
    }
}
