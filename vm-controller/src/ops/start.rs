//! `vm.start`: boot a `stopped` or `failed` VM; a running one is returned as is.

use banger_proto::ErrorCode;
use banger_proto::vm::{VmOpReply, VmRefRequest, VmState};

use super::wrong_state;
use crate::boot::BootKind;
use crate::controller::Controller;
use crate::error::{BootError, Coded, HaltError, LookupError, StateError};
use crate::halt::HaltMode;

/// Why a start or a restart failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The VM could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Its state does not allow it.
    #[error(transparent)]
    State(#[from] StateError),
    /// Stopping it first (a restart, or a failed VM's leftover process) failed.
    #[error(transparent)]
    Halt(#[from] HaltError),
    /// The boot failed (and was undone; the VM is `failed` with the reason).
    #[error(transparent)]
    Boot(#[from] BootError),
}

impl Coded for StartError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Lookup(e) => e.code(),
            Self::State(e) => e.code(),
            Self::Halt(e) => e.code(),
            Self::Boot(e) => e.code(),
        }
    }
}

impl Controller {
    /// Starts a VM.
    pub async fn start(&self, req: VmRefRequest) -> Result<VmOpReply, StartError> {
        let _guard = self.lock(&req.id).await;
        let rec = self.record(&req.id).await?;
        match rec.state() {
            VmState::Running => {
                return Ok(VmOpReply::new(
                    rec.info,
                    Some("the vm was already running".to_owned()),
                ));
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
            _ => return Err(wrong_state(&rec, "be started").into()),
        }
        let rec = self.boot(&req.id, BootKind::Start).await?;
        Ok(VmOpReply::new(rec.info, None))
    }
}

#[cfg(test)]
impl crate::error::Samples for StartError {
    fn samples() -> Vec<Self> {
        let mut all: Vec<Self> = Vec::new();
        all.extend(LookupError::samples().into_iter().map(Self::Lookup));
        all.extend(StateError::samples().into_iter().map(Self::State));
        all.extend(HaltError::samples().into_iter().map(Self::Halt));
        all.extend(BootError::samples().into_iter().map(Self::Boot));
        all
    }
}
