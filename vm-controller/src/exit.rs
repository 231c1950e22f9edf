//! What the controller does with running VMs when it stops (SIGTERM).
//!
//! By default nothing: a VM's hypervisor runs in its own process group and outlives a controller
//! restart or upgrade; the next controller re-adopts it (see [`crate::reconcile`]).
//!
//! In a container (`compose.yaml`) that is not possible: every process of the container,
//! the VMs' hypervisors included, dies with the controller. Killed that way, a VM would leave
//! its tap, its NAT rules, its lease and its DNS record behind. With `stop_vms_on_exit`, the
//! controller therefore stops every running VM as `vm stop` does (CtrlAltDel, the grace window,
//! then force; netd detaches the tap, `stopped` events reach dnsd) before it exits. The
//! container manager's stop timeout must cover the stop grace window (compose.yaml gives the
//! controller `stop_grace_period: 60s`).

use banger_proto::vm::VmState;
use tokio::task::JoinSet;

use crate::controller::Controller;
use crate::halt::HaltMode;

impl Controller {
    /// Stops every VM that runs (or is starting), concurrently, each under its own lock.
    /// Returns how many were stopped; failures are logged, not returned: the process is exiting.
    pub async fn stop_all_on_exit(&self) -> usize {
        let records = match self.db().list().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "listing VMs to stop them before exiting");
                return 0;
            }
        };
        let mut stops = JoinSet::new();
        for rec in records {
            if !matches!(rec.state(), VmState::Running | VmState::Starting) {
                continue;
            }
            let ctl = self.clone();
            stops.spawn(async move {
                let id = rec.id().clone();
                let _guard = ctl.lock(&id).await;
                (rec.info.name, ctl.halt(&id, HaltMode::Graceful).await)
            });
        }
        if stops.is_empty() {
            return 0;
        }
        tracing::info!(vms = stops.len(), "stopping the running VMs before exiting");
        let mut stopped = 0;
        while let Some(done) = stops.join_next().await {
            match done {
                Ok((_, Ok(_))) => stopped += 1,
                Ok((name, Err(e))) => {
                    tracing::error!(vm.name = %name, error = %banger_bus::runtime::chain(&e), "stopping before exit");
                }
                Err(e) => tracing::error!(error = %e, "a stop task ended abnormally"),
            }
        }
        tracing::info!(stopped, "stopped the running VMs");
        stopped
    }
}
