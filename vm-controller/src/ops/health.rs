//! `vm.health`: the guest agent's `/healthz` over hybrid vsock. A change of health is published
//! as a `health` event. When the agent does not answer, the VM's console is looked at at once
//! ([`crate::watch`]): a guest that died makes the VM `failed` and the reply says why.

use banger_proto::ApiError;
use banger_proto::agent::Health;
use banger_proto::event::EventKind;
use banger_proto::vm::VmRefRequest;

use super::require_running;
use crate::boot::step;
use crate::controller::Controller;

impl Controller {
    /// Asks a running VM's agent for its health.
    pub async fn health(&self, req: VmRefRequest) -> Result<Health, ApiError> {
        let rec = self.record(&req.id).await?;
        require_running(&rec, "a health check")?;
        let paths = self.paths(&req.id);
        let result = self
            .inner
            .agent
            .health(paths.vsock_uds, self.inner.config.agent_port)
            .await;
        let healthy = matches!(&result, Ok(h) if h.status == "ok");
        let changed = self
            .inner
            .last_health
            .lock()
            .map(|mut seen| seen.insert(req.id.clone(), healthy) != Some(healthy))
            .unwrap_or(false);
        if changed {
            self.emit(EventKind::Health, &rec.info).await;
        }
        if result.is_err()
            && let Some(dead) = self.dead_guest_error(&req.id).await
        {
            // The guest (or its hypervisor) died: say so now rather than let callers wait.
            return Err(dead);
        }
        result.map_err(|e| step("asking the guest agent", e.into()))
    }
}
