//! `net.detach`, and the teardown shared with the `stopped`/`deleted` event reactions and
//! reconciliation.
//!
//! Teardown of a batch of VMs: remove their per-VM rules (skipped when the table or the rules
//! are already gone: there is nothing left to identify them by), delete their taps in one kernel
//! operation (see [`crate::kernel::HostNet::delete_links`]), then mark the leases inactive or release
//! them. A tap that cannot be deleted leaves the lease untouched, so a retry or the next
//! reconciliation finishes the job; rules that could not be removed one by one are dropped by
//! rebuilding the table from the leases.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use banger_bus::runtime::chain;
use banger_proto::net::{DetachReply, DetachRequest};
use banger_proto::{ApiError, ErrorCode, VmId};
use tracing::Instrument;

use crate::link::LinkError;
use crate::state::{Netd, RestoreError};
use crate::store::StoreError;

/// Why a detach failed.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// The VM has no lease on this host.
    #[error("VM {0} has no lease on this host")]
    NotFound(VmId),
    /// The lease store failed.
    #[error("updating leases")]
    Store(#[from] StoreError),
    /// Deleting taps failed.
    #[error("deleting taps")]
    Link(#[from] LinkError),
    /// Rules could not be removed, even by rebuilding the table.
    #[error("removing port-forward rules")]
    Rules(#[from] RestoreError),
}

impl From<DetachError> for ApiError {
    fn from(e: DetachError) -> Self {
        let code = match &e {
            DetachError::NotFound(_) => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, chain(&e))
    }
}

/// One VM to tear down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teardown {
    /// The VM.
    pub vm: VmId,
    /// Release its lease too (it was deleted).
    pub release: bool,
    /// When the VM was seen stopped, for a reaction to a `stopped` event: a VM attached at or
    /// after that time has been started again meanwhile (a restart whose `attach` overtook the
    /// event) and keeps its tap. `None`: tear down whatever the lease's age.
    pub stopped_at_ms: Option<u64>,
    /// A catch-up reaction to a `stopped`/`deleted` event. The controller calls `net.detach`
    /// itself before it publishes those (it owns the teardown on the hot path), so a lease it
    /// already detached (inactive) costs no kernel call and no lease write: only a release
    /// that is still due is made. An active lease (the controller's call was missed) is torn
    /// down in full. `false` (`net.detach`, reconciliation): always tear down what is there.
    pub catch_up: bool,
}

/// What happened to one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornDown {
    /// The VM.
    pub vm: VmId,
    /// Whether it had a lease (nothing was done otherwise).
    pub had_lease: bool,
    /// Whether its tap was deleted.
    pub tap_removed: bool,
    /// Whether its lease was released.
    pub released: bool,
}

/// The endpoint: the VM is torn down together with the other requests that arrive at the same
/// time (see [`super::detach_batch`]).
pub async fn handle(netd: Arc<Netd>, req: DetachRequest) -> Result<DetachReply, ApiError> {
    let span = tracing::info_span!("net.detach", vm.id = %req.vm_id, host = %netd.host);
    super::detach_batch::detach_batched(&netd, req)
        .instrument(span)
        .await
}

/// Detaches one VM; an unknown VM is `not_found` and changes nothing.
pub async fn detach(netd: &Netd, req: DetachRequest) -> Result<DetachReply, DetachError> {
    let _gate = netd.gate.read().await;
    let _vm = netd.locks.lock(&req.vm_id).await;
    let done = teardown_locked(
        netd,
        &[Teardown {
            vm: req.vm_id.clone(),
            release: req.release,
            stopped_at_ms: None,
            catch_up: false,
        }],
    )
    .await?;
    match done.into_iter().next() {
        Some(d) if d.had_lease => Ok(DetachReply {
            tap_removed: d.tap_removed,
            released: d.released,
        }),
        _ => Err(DetachError::NotFound(req.vm_id)),
    }
}

/// Tears down a batch, taking the gate and the VMs' locks.
pub async fn teardown(netd: &Netd, items: &[Teardown]) -> Result<Vec<TornDown>, DetachError> {
    let _gate = netd.gate.read().await;
    let ids: Vec<VmId> = items.iter().map(|t| t.vm.clone()).collect();
    let _vms = netd.locks.lock_many(&ids).await;
    teardown_locked(netd, items).await
}

/// Tears down a batch; the caller holds the gate and the VMs' locks. VMs without a lease are
/// reported with `had_lease: false` and otherwise ignored.
pub async fn teardown_locked(
    netd: &Netd,
    items: &[Teardown],
) -> Result<Vec<TornDown>, DetachError> {
    // Merge duplicates: a `stopped` and a `deleted` of one VM in one batch mean "release"; of
    // two stop times the later one counts, and an unconditional teardown wins (so does a
    // teardown that is not a catch-up).
    let mut wanted: HashMap<&VmId, (bool, Option<u64>, bool)> = HashMap::new();
    for t in items {
        wanted
            .entry(&t.vm)
            .and_modify(|(release, at, catch_up)| {
                *release |= t.release;
                *at = at.zip(t.stopped_at_ms).map(|(a, b)| a.max(b));
                *catch_up &= t.catch_up;
            })
            .or_insert((t.release, t.stopped_at_ms, t.catch_up));
    }
    let mut restarted = HashSet::new();
    let ids: Vec<VmId> = wanted.keys().map(|v| (*v).clone()).collect();
    let (settled, leases): (HashMap<VmId, _>, HashMap<VmId, _>) = netd
        .store
        .get_many(ids)
        .await?
        .into_iter()
        .filter(|l| match wanted.get(&l.vm_id) {
            None => false,
            Some((false, Some(at), _)) if l.active && l.updated_at_ms >= *at => {
                tracing::debug!(vm.id = %l.vm_id, "attached again since it stopped: keeping its tap");
                restarted.insert(l.vm_id.clone());
                false
            }
            Some(_) => true,
        })
        .map(|l| (l.vm_id.clone(), l))
        // The cheap check of a catch-up: an inactive lease was detached already (its tap and
        // rules went before it was marked inactive), so there is no kernel work left.
        .partition(|(vm, l)| !l.active && wanted.get(vm).is_some_and(|w| w.2));
    if !settled.is_empty() {
        tracing::debug!(vms = settled.len(), "already detached: no kernel work");
    }
    let leased: Vec<VmId> = leases.keys().cloned().collect();

    let mut rules_failed = false;
    if leases.values().any(|l| !l.port_forwards.is_empty()) {
        match netd.kernel.remove_vm_rules(&leased).await {
            Ok(n) => tracing::debug!(rules = n, "removed VM rules"),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "removing VM rules failed; rebuilding the table");
                rules_failed = true;
            }
        }
    }

    let taps: Vec<String> = leases.values().map(|l| l.tap.clone()).collect();
    let removed = netd
        .kernel
        .delete_links(&taps, netd.cfg.teardown_group)
        .await?;

    let release: Vec<VmId> = leased
        .iter()
        .chain(settled.keys())
        .filter(|v| wanted.get(v).is_some_and(|(release, _, _)| *release))
        .cloned()
        .collect();
    if !leased.is_empty() || !release.is_empty() {
        netd.store.detach(leased.clone(), release.clone()).await?;
    }
    if rules_failed {
        netd.restore_rules().await?;
    }

    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for t in items {
        if !seen.insert(&t.vm) {
            continue;
        }
        let lease = leases.get(&t.vm);
        let done = TornDown {
            vm: t.vm.clone(),
            had_lease: lease.is_some() || settled.contains_key(&t.vm) || restarted.contains(&t.vm),
            tap_removed: lease.is_some_and(|l| removed.contains(&l.tap)),
            released: release.contains(&t.vm),
        };
        if done.had_lease {
            tracing::info!(
                vm.id = %done.vm,
                tap_removed = done.tap_removed,
                released = done.released,
                "detached"
            );
        }
        out.push(done);
    }
    Ok(out)
}
