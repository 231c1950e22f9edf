//! `vm.set`: change cpus, memory or the work disk size; applied on the next start.
//!
//! Values are typed (a zero or negative value never deserialises); the work disk only grows
//! (stord cannot shrink a filesystem safely).

use banger_proto::ErrorCode;
use banger_proto::vm::{SetVmRequest, VmOpReply, VmState};

use super::wrong_state;
use crate::controller::Controller;
use crate::error::{Coded, LookupError, RecordError, StateError};
use crate::store::StoreError;

/// Why a set failed.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The request changes nothing.
    #[error("nothing to set: give cpus, memory_mib or disk_mib")]
    Nothing,
    /// The VM could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// It is being created or deleted.
    #[error(transparent)]
    State(#[from] StateError),
    /// The change was refused (a shrinking disk) or could not be written.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl Coded for SetError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Nothing => ErrorCode::InvalidArgument,
            Self::Lookup(e) => e.code(),
            Self::State(e) => e.code(),
            Self::Record(e) => e.code(),
        }
    }
}

impl Controller {
    /// Changes a VM's settings.
    pub async fn set(&self, req: SetVmRequest) -> Result<VmOpReply, SetError> {
        if req.cpus.is_none() && req.memory_mib.is_none() && req.disk_mib.is_none() {
            return Err(SetError::Nothing);
        }
        let _guard = self.lock(&req.id).await;
        let rec = self.record(&req.id).await?;
        if matches!(rec.state(), VmState::Creating | VmState::Deleting) {
            return Err(wrong_state(&rec, "be changed").into());
        }
        let running = rec.state().may_have_process() && rec.state() != VmState::Failed;
        let (cpus, memory, disk) = (req.cpus, req.memory_mib, req.disk_mib);
        let rec = self
            .inner
            .db
            .modify(&req.id, move |r| {
                if let Some(d) = disk
                    && d.get() < r.info.disk_mib.get()
                {
                    return Err(StoreError::Refused(format!(
                        "the work disk of vm {} is {} MiB and cannot shrink to {} MiB",
                        r.info.name, r.info.disk_mib, d
                    )));
                }
                if let Some(c) = cpus {
                    r.info.cpus = c;
                }
                if let Some(m) = memory {
                    r.info.memory_mib = m;
                }
                if let Some(d) = disk {
                    r.info.disk_mib = d;
                }
                Ok(())
            })
            .await
            .map_err(|e| self.store_error(e))?;
        let note = running.then(|| "applied on the next start (banger vm restart)".to_owned());
        Ok(VmOpReply::new(rec.info, note))
    }
}

#[cfg(test)]
impl crate::error::Samples for SetError {
    fn samples() -> Vec<Self> {
        let mut all = vec![Self::Nothing];
        all.extend(LookupError::samples().into_iter().map(Self::Lookup));
        all.extend(StateError::samples().into_iter().map(Self::State));
        all.extend(RecordError::samples().into_iter().map(Self::Record));
        all
    }
}
