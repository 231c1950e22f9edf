//! Reconciliation: at start-up and periodically, converge the kernel and the leases on the truth
//! instead of trusting events alone.
//!
//! The truth about VMs is this host's vm-controller, asked through the scatter-gather
//! `vm.list`. With its answer: leases of VMs it does not know are released (the VM was
//! deleted), and VMs that cannot be using a network (stopped, deleting) lose their tap and rules.
//! Without an answer (no controller running, or it timed out) netd cannot tell a running VM
//! from a stopped one, so it only removes what is certainly orphaned: taps with banger's prefix
//! that belong to no lease, or to a lease that is detached. In both cases the bridge, IPv4
//! forwarding and the nftables table are put back if something removed them.
//!
//! Leases attached or detached within the configured grace (`reconcile_grace_secs`) are left
//! alone: the controller's answer may predate them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use banger_bus::runtime::chain;
use banger_bus::shutdown::CancellationToken;
use banger_proto::VmId;
use banger_proto::op::{self, Lab};
use banger_proto::service::VM_CONTROLLER;
use banger_proto::vm::{ListVmsRequest, VmState};
use rtnetlink::packet_route::link::InfoKind;

use crate::lease::TAP_PREFIX;
use crate::link::{Link, LinkError};
use crate::ops::detach::{DetachError, Teardown, teardown_locked};
use crate::state::{Netd, RestoreError, desired_rules};
use crate::store::{LeaseRow, StoreError};

/// How long `$SRV.PING` collects answers from controllers.
const PING_WAIT: Duration = Duration::from_millis(300);
/// How long to wait for every controller's `vm.list` answer.
const GATHER_DEADLINE: Duration = Duration::from_secs(3);

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading leases.
    #[error("reading leases")]
    Store(#[from] StoreError),
    /// Netlink.
    #[error("netlink")]
    Link(#[from] LinkError),
    /// Tearing VMs down.
    #[error("tearing down VMs that are not running")]
    Teardown(#[from] DetachError),
    /// Restoring the table.
    #[error("restoring rules")]
    Restore(#[from] RestoreError),
    /// Reading the table.
    #[error("reading the nftables table")]
    Nat(#[from] crate::nat::NatError),
    /// Forwarding.
    #[error("enabling IPv4 forwarding")]
    Forwarding(#[source] std::io::Error),
    /// The accepts beside a FORWARD policy that drops.
    #[error("adding accept rules to iptables' FORWARD path")]
    ForwardAccept(#[from] crate::forward_accept::ForwardAcceptError),
}

/// What reconciliation will do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// VMs to tear down (release: the controller does not know them).
    pub teardown: Vec<Teardown>,
    /// Orphan taps to delete: (index, name).
    pub orphan_taps: Vec<(u32, String)>,
}

/// Whether a VM in `state` may be using its tap: being created or started (netd attached it
/// before the hypervisor runs), running, stopping, or failed with a process possibly left.
pub fn holds_network(state: VmState) -> bool {
    state == VmState::Creating || state.may_have_process()
}

/// Decides what to do. `vms` is the controller's view of this host (None: no answer);
/// leases updated at or after `recent_ms` are skipped; `group` is the teardown group.
pub fn plan(
    links: &[Link],
    leases: &[LeaseRow],
    vms: Option<&HashMap<VmId, VmState>>,
    recent_ms: u64,
    group: u32,
) -> Plan {
    let present: HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let mut plan = Plan::default();
    let mut handled_taps = HashSet::new();
    for l in leases {
        let recent = l.updated_at_ms >= recent_ms;
        if recent {
            handled_taps.insert(l.tap.as_str());
            continue;
        }
        let tap_up = present.contains(l.tap.as_str());
        if let Some(vms) = vms {
            match vms.get(&l.vm_id) {
                None => {
                    plan.teardown.push(Teardown {
                        vm: l.vm_id.clone(),
                        release: true,
                        stopped_at_ms: None,
                        catch_up: false,
                    });
                    handled_taps.insert(l.tap.as_str());
                    continue;
                }
                Some(state) if !holds_network(*state) && (l.active || tap_up) => {
                    plan.teardown.push(Teardown {
                        vm: l.vm_id.clone(),
                        release: false,
                        stopped_at_ms: None,
                        catch_up: false,
                    });
                    handled_taps.insert(l.tap.as_str());
                    continue;
                }
                Some(_) => {}
            }
        }
        if l.active {
            handled_taps.insert(l.tap.as_str());
        }
    }
    for link in links {
        // A tap with banger's prefix, or anything a crashed batch teardown left in the group.
        // Other kinds of devices with the prefix (an operator's veth) are not netd's.
        let ours = (link.name.starts_with(TAP_PREFIX) && link.kind == Some(InfoKind::Tun))
            || link.group == group;
        if ours && !handled_taps.contains(link.name.as_str()) {
            plan.orphan_taps.push((link.index, link.name.clone()));
        }
    }
    plan
}

/// The controller's view of this host's VMs, or None when no controller of this host answered.
pub async fn controller_view(netd: &Netd) -> Option<HashMap<VmId, VmState>> {
    let instances = match netd.bus.ping(Some(VM_CONTROLLER), PING_WAIT).await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %chain(&e), "pinging controllers failed");
            return None;
        }
    };
    if !instances
        .iter()
        .any(|i| i.host() == Some(netd.host.as_str()))
    {
        return None;
    }
    let replies = netd
        .bus
        .gather::<op::vm::List>(
            &Lab,
            &ListVmsRequest::default(),
            Some(instances.len()),
            GATHER_DEADLINE,
        )
        .await
        .ok()?;
    let mine = replies
        .into_iter()
        .filter_map(Result::ok)
        .find(|r| r.host == netd.host)?;
    Some(
        mine.vms
            .into_iter()
            .filter(|v| v.host == netd.host)
            .map(|v| (v.id, v.state))
            .collect(),
    )
}

/// One reconciliation pass.
pub async fn reconcile(netd: &Netd) -> Result<(), ReconcileError> {
    let recent_ms = banger_bus::now_ms()
        .saturating_sub(u64::try_from(netd.cfg.reconcile_grace.as_millis()).unwrap_or(u64::MAX));
    // Asked before taking the gate: the answer may take a while and is judged with `recent_ms`.
    let vms = controller_view(netd).await;
    reconcile_with(netd, vms.as_ref(), recent_ms).await
}

/// One pass given the controller's view of this host's VMs (`None`: no controller answered);
/// leases updated at or after `recent_ms` are left alone.
pub async fn reconcile_with(
    netd: &Netd,
    vms: Option<&HashMap<VmId, VmState>>,
    recent_ms: u64,
) -> Result<(), ReconcileError> {
    let _gate = netd.gate.write().await;

    netd.ensure_bridge().await?;
    netd.kernel
        .enable_forwarding()
        .await
        .map_err(ReconcileError::Forwarding)?;
    // Links first, then leases: attach stores the lease before creating the tap, so a tap seen
    // here always has its lease in the read that follows.
    let links: Vec<Link> = netd.kernel.list_links().await?;
    let leases = netd.store.all().await?;
    let plan = plan(&links, &leases, vms, recent_ms, netd.cfg.teardown_group);
    if !plan.teardown.is_empty() {
        tracing::info!(
            vms = plan.teardown.len(),
            controller_answered = vms.is_some(),
            "reconcile: tearing down VMs that are not running"
        );
        teardown_locked(netd, &plan.teardown).await?;
    }
    if !plan.orphan_taps.is_empty() {
        let names: Vec<String> = plan.orphan_taps.iter().map(|(_, n)| n.clone()).collect();
        tracing::info!(taps = ?names, "reconcile: removing orphan taps");
        netd.kernel
            .delete_links(&names, netd.cfg.teardown_group)
            .await?;
    }

    // Rules: compare what is installed with what the leases want; rebuild on any difference.
    let leases = netd.store.all().await?;
    let want = desired_rules(&leases);
    let state = netd.kernel.rules_state().await?;
    let want_counts: HashMap<&VmId, usize> =
        want.iter().map(|v| (&v.vm, v.forwards.len() * 2)).collect();
    let have_counts: HashMap<&VmId, usize> =
        state.vm_rules.iter().map(|(k, v)| (k, v.len())).collect();
    if !state.base_complete || want_counts != have_counts {
        tracing::info!(
            table = %netd.cfg.table,
            base_complete = state.base_complete,
            "reconcile: restoring the nftables table"
        );
        netd.restore_rules().await?;
    }
    // Another firewall (Docker) may have set the FORWARD policy to DROP since the last pass.
    netd.kernel.ensure_forward_accepts().await?;
    Ok(())
}

/// Reconciles every `cfg.reconcile_interval` until `shutdown`.
pub async fn periodic(netd: Arc<Netd>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(netd.cfg.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; start-up already reconciled.
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let span = tracing::info_span!("net.reconcile", host = %netd.host);
        if let Err(e) = tracing::Instrument::instrument(reconcile(&netd), span).await {
            tracing::warn!(error = %chain(&e), "reconciliation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use banger_proto::VmName;

    use super::*;

    fn id(n: u8) -> VmId {
        VmId::new(format!("{n:02x}{}", "0".repeat(30))).unwrap()
    }

    fn lease(n: u8, active: bool, updated: u64) -> LeaseRow {
        LeaseRow {
            vm_id: id(n),
            vm_name: VmName::new(format!("vm{n}")).unwrap(),
            ip: Ipv4Addr::new(10, 0, 0, n + 1),
            mac: format!("06:00:00:00:00:{n:02x}"),
            tap: format!("bgr{n:02x}0000000000"),
            active,
            port_forwards: vec![],
            updated_at_ms: updated,
        }
    }

    fn tap(n: u8, index: u32) -> Link {
        Link {
            index,
            name: format!("bgr{n:02x}0000000000"),
            master: Some(1),
            group: 0,
            up: true,
            kind: Some(InfoKind::Tun),
            mtu: None,
        }
    }

    fn other(name: &str, index: u32, group: u32) -> Link {
        Link {
            name: name.into(),
            group,
            kind: Some(InfoKind::Veth),
            ..tap(0, index)
        }
    }

    #[test]
    fn without_a_controller_only_certain_orphans_go() {
        let leases = [lease(1, true, 0), lease(2, false, 0)];
        let links = [
            tap(1, 11),
            tap(2, 12),
            tap(9, 19),
            other("eth0", 2, 0),
            other("banger0", 3, 0),
            other("bgrveth", 4, 0),
        ];
        let p = plan(&links, &leases, None, 1000, 77);
        assert!(p.teardown.is_empty());
        let names: Vec<&str> = p.orphan_taps.iter().map(|(_, n)| n.as_str()).collect();
        // Lease 2 is detached, 9 has no lease; 1 is active and must stay.
        assert_eq!(names, ["bgr020000000000", "bgr090000000000"]);
    }

    #[test]
    fn with_a_controller_stopped_vms_lose_their_tap_and_unknown_ones_their_lease() {
        let leases = [
            lease(1, true, 0),
            lease(2, true, 0),
            lease(3, true, 0),
            lease(4, true, 0),
        ];
        let links = [tap(1, 11), tap(2, 12), tap(3, 13), tap(4, 14)];
        let vms = HashMap::from([
            (id(1), VmState::Running),
            (id(2), VmState::Stopped),
            (id(4), VmState::Creating),
        ]);
        let p = plan(&links, &leases, Some(&vms), 1000, 77);
        assert_eq!(
            p.teardown,
            vec![
                Teardown {
                    vm: id(2),
                    release: false,
                    stopped_at_ms: None,
                    catch_up: false,
                },
                Teardown {
                    vm: id(3),
                    release: true,
                    stopped_at_ms: None,
                    catch_up: false,
                },
            ]
        );
        assert!(p.orphan_taps.is_empty(), "{:?}", p.orphan_taps);
    }

    #[test]
    fn recent_leases_and_their_taps_are_left_alone() {
        let leases = [lease(1, false, 5000)];
        let links = [tap(1, 11)];
        let p = plan(&links, &leases, Some(&HashMap::new()), 1000, 77);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn leftovers_in_the_teardown_group_are_removed_whatever_their_name() {
        let p = plan(&[other("weird", 5, 77)], &[], None, 0, 77);
        assert_eq!(p.orphan_taps, vec![(5, "weird".to_owned())]);
    }
}
