//! `vm.get` and `vm.list`: reads of the records (no lock: each read is one consistent row).

use banger_proto::ErrorCode;
use banger_proto::vm::{ListVmsReply, ListVmsRequest, VmInfo, VmRefRequest};

use crate::controller::Controller;
use crate::error::{Coded, LookupError};
use crate::store::StoreError;

/// Why listing the VMs failed: the database did.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ListError(#[from] StoreError);

impl Coded for ListError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

impl Controller {
    /// One VM.
    pub async fn get(&self, req: VmRefRequest) -> Result<VmInfo, LookupError> {
        Ok(self.record(&req.id).await?.info)
    }

    /// The VMs of this host the request's refs could name (every VM when it has none), by
    /// name. The caller resolves the refs: this only keeps the answer small.
    pub async fn list(&self, req: ListVmsRequest) -> Result<ListVmsReply, ListError> {
        let vms = self.inner.db.list().await?;
        Ok(ListVmsReply::new(
            self.inner.host.clone(),
            vms.into_iter()
                .map(|r| r.info)
                .filter(|v| req.wants(v))
                .collect(),
        ))
    }
}

#[cfg(test)]
impl crate::error::Samples for ListError {
    fn samples() -> Vec<Self> {
        vec![Self(crate::error::samples::store_error())]
    }
}
