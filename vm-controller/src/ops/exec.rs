//! `vm.exec`: run a command in a running guest through its agent and return its output.

use banger_proto::ErrorCode;
use banger_proto::agent::ExecResult;
use banger_proto::vm::VmExecRequest;

use super::require_running;
use crate::controller::Controller;
use crate::deps::DepError;
use crate::error::{Coded, LookupError, StateError};

/// Why an exec failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request has no command.
    #[error("exec needs a command")]
    NoCommand,
    /// The VM could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// It is not running.
    #[error(transparent)]
    State(#[from] StateError),
    /// The agent could not run it (or could not be reached).
    #[error("running the command in the guest")]
    Agent(#[source] DepError),
}

impl Coded for ExecError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NoCommand => ErrorCode::InvalidArgument,
            Self::Lookup(e) => e.code(),
            Self::State(e) => e.code(),
            Self::Agent(e) => e.code(),
        }
    }
}

impl Controller {
    /// Runs a command in the guest.
    pub async fn exec(&self, req: VmExecRequest) -> Result<ExecResult, ExecError> {
        if req.exec.argv.is_empty() {
            return Err(ExecError::NoCommand);
        }
        let rec = self.record(&req.id).await?;
        require_running(&rec, "exec")?;
        self.await_agent_after_boot(&rec).await;
        let paths = self.paths(&req.id);
        self.inner
            .agent
            .exec(paths.vsock_uds, self.inner.config.agent_port, req.exec)
            .await
            .map_err(ExecError::Agent)
    }
}

#[cfg(test)]
impl crate::error::Samples for ExecError {
    fn samples() -> Vec<Self> {
        use crate::error::samples::agent_errors;
        let mut all = vec![Self::NoCommand];
        all.extend(LookupError::samples().into_iter().map(Self::Lookup));
        all.extend(StateError::samples().into_iter().map(Self::State));
        all.extend(agent_errors().into_iter().map(Self::Agent));
        all
    }
}
