//! `vm.health`: the guest agent's `/healthz` over hybrid vsock. A change of health is published
//! as a `health` event. When the agent does not answer, the VM's console is looked at at once
//! ([`crate::watch`]): a guest that died makes the VM `failed` and the reply says why.

use banger_proto::ErrorCode;
use banger_proto::agent::Health;
use banger_proto::event::EventKind;
use banger_proto::vm::VmRefRequest;

use super::require_running;
use crate::controller::Controller;
use crate::deps::DepError;
use crate::error::{Coded, LookupError, StateError};

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The VM could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// It is not running, or its guest died while the agent was asked.
    #[error(transparent)]
    State(#[from] StateError),
    /// The agent did not answer.
    #[error("asking the guest agent")]
    Agent(#[source] DepError),
}

impl Coded for HealthError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Lookup(e) => e.code(),
            Self::State(e) => e.code(),
            Self::Agent(e) => e.code(),
        }
    }
}

impl Controller {
    /// Asks a running VM's agent for its health.
    pub async fn health(&self, req: VmRefRequest) -> Result<Health, HealthError> {
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
            return Err(dead.into());
        }
        result.map_err(HealthError::Agent)
    }
}

#[cfg(test)]
impl crate::error::Samples for HealthError {
    fn samples() -> Vec<Self> {
        use crate::error::samples::agent_errors;
        let mut all: Vec<Self> = Vec::new();
        all.extend(LookupError::samples().into_iter().map(Self::Lookup));
        all.extend(StateError::samples().into_iter().map(Self::State));
        all.extend(agent_errors().into_iter().map(Self::Agent));
        all
    }
}
