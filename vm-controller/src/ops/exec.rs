//! `vm.exec`: run a command in a running guest through its agent and return its output.

use banger_proto::ApiError;
use banger_proto::agent::ExecResult;
use banger_proto::vm::VmExecRequest;

use super::require_running;
use crate::boot::step;
use crate::controller::Controller;

impl Controller {
    /// Runs a command in the guest.
    pub async fn exec(&self, req: VmExecRequest) -> Result<ExecResult, ApiError> {
        if req.exec.argv.is_empty() {
            return Err(ApiError::invalid("exec needs a command"));
        }
        let rec = self.record(&req.id).await?;
        require_running(&rec, "exec")?;
        let paths = self.paths(&req.id);
        self.inner
            .agent
            .exec(paths.vsock_uds, self.inner.config.agent_port, req.exec)
            .await
            .map_err(|e| step("running the command in the guest", e.into()))
    }
}
