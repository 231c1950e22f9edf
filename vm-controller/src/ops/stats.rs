//! `vm.stats`: the hypervisor process's memory and CPU time, and the guest's own view through
//! its agent.
//!
//! The process is looked up under the VM's lock (so a concurrent stop cannot swap it out
//! between the lookup and the read); the agent is asked after the lock is released, so a slow
//! guest never holds up a stop.

use banger_proto::vm::{VmRefRequest, VmState, VmStats};

use crate::controller::Controller;
use crate::error::LookupError;

impl Controller {
    /// Resource statistics of a VM.
    pub async fn stats(&self, req: VmRefRequest) -> Result<VmStats, LookupError> {
        let (rec, usage) = {
            let _guard = self.lock(&req.id).await;
            let rec = self.record(&req.id).await?;
            let usage = if rec.state().may_have_process() {
                let paths = self.paths(&req.id);
                match self.inner.vmm.find_process(&paths, rec.pid).await {
                    Some(pid) => self.inner.vmm.usage(pid),
                    None => None,
                }
            } else {
                None
            };
            (rec, usage)
        };
        let (guest, vmm_metrics) = if rec.state() == VmState::Running {
            let paths = self.paths(&req.id);
            let guest = self
                .inner
                .agent
                .health(paths.vsock_uds.clone(), self.inner.config.agent_port)
                .await
                .ok();
            (guest, self.inner.vmm.metrics(&paths).await)
        } else {
            (None, None)
        };
        Ok(VmStats {
            id: req.id,
            vmm_rss_bytes: usage.map(|u| u.rss_bytes),
            vmm_cpu_ms: usage.map(|u| u.cpu_ms),
            guest,
            vmm_metrics,
        })
    }
}
