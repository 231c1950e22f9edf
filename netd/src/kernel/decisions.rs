//! netd's decisions, driven against the recording kernel: what attach, detach, the event
//! teardown, reconciliation and the exit policy ask the kernel to do. No root needed; the
//! lease store is real SQLite in a temporary directory and the bus a real nats-server (only
//! reconciliation's controller query would use it, and these tests pass its answer directly).

use std::collections::HashMap;
use std::sync::Arc;

use banger_proto::net::{AttachRequest, DetachRequest, PortForward, Protocol};
use banger_proto::vm::VmState;
use banger_proto::{ApiError, ErrorCode, HostId, VmId, VmName};
use banger_testkit::NatsServer;
use rtnetlink::packet_route::link::InfoKind;

use super::recording::{Call, Op, Recording};
use crate::config::{NetConfig, NetdFile};
use crate::exit::{ExitOutcome, on_exit};
use crate::ops::attach::attach;
use crate::ops::detach::{Teardown, detach, teardown};
use crate::ops::detach_batch::detach_batched;
use crate::reconcile::reconcile_with;
use crate::state::Netd;
use crate::store::LeaseStore;

struct Fx {
    netd: Netd,
    kernel: Arc<Recording>,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

async fn fx() -> Fx {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let bus = banger_bus::Bus::new(client, banger_proto::Subjects::default());
    let dir = tempfile::tempdir().unwrap();
    let store = LeaseStore::open(dir.path()).unwrap();
    let cfg = NetConfig::from_file(NetdFile {
        bridge: "bunit0".into(),
        subnet: Some("10.9.0.0/24".into()),
        guest_dns: Some(vec![]),
        ..NetdFile::default()
    })
    .unwrap();
    let kernel = Arc::new(Recording::default());
    let netd = Netd::with_kernel(
        bus,
        HostId::new("unit").unwrap(),
        cfg,
        store,
        kernel.clone(),
    )
    .await
    .unwrap();
    Fx {
        netd,
        kernel,
        _nats: nats,
        _dir: dir,
    }
}

fn id(n: u8) -> VmId {
    VmId::new(format!("{n:02x}{}", "a".repeat(30))).unwrap()
}

fn tap(n: u8) -> String {
    crate::lease::tap_name(&id(n), 0)
}

fn pf(host_port: u16) -> PortForward {
    PortForward {
        host_port,
        guest_port: 80,
        protocol: Protocol::Tcp,
    }
}

fn req(n: u8, forwards: Vec<PortForward>) -> AttachRequest {
    AttachRequest {
        vm_id: id(n),
        vm_name: VmName::new(format!("vm{n}")).unwrap(),
        port_forwards: forwards,
    }
}

fn stop(n: u8, release: bool) -> DetachRequest {
    DetachRequest {
        vm_id: id(n),
        release,
    }
}

impl Fx {
    async fn active(&self, n: u8) -> Option<bool> {
        self.netd.store.get(id(n)).await.unwrap().map(|l| l.active)
    }

    fn bridge_index(&self) -> u32 {
        self.kernel
            .world(|w| w.links.get("bunit0").map(|l| l.index))
            .unwrap()
    }
}

#[tokio::test]
async fn start_up_puts_the_bridge_forwarding_and_the_table_in_place() {
    let f = fx().await;
    f.kernel.world(|w| {
        assert_eq!(w.links.get("bunit0").unwrap().kind, Some(InfoKind::Bridge));
        assert_eq!(w.table.as_ref().map(|t| t.len()), Some(0));
    });
}

#[tokio::test]
async fn attach_creates_a_tap_on_the_bridge_and_the_rules_and_is_idempotent() {
    let f = fx().await;
    f.kernel.take_calls();
    let lease = attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    assert_eq!(lease.tap, tap(1));
    assert_eq!(
        f.kernel.take_calls(),
        [
            Call::CreateTap(tap(1)),
            Call::JoinBridge(tap(1)),
            Call::ReplaceVmRules(id(1)),
        ]
    );
    let bridge = f.bridge_index();
    f.kernel.world(|w| {
        assert_eq!(w.links.get(&tap(1)).unwrap().master, Some(bridge));
        assert_eq!(w.rule_vms(), [id(1)]);
    });

    // Again: the same lease, the tap re-asserted on the bridge, not created twice.
    let again = attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    assert_eq!(again, lease);
    assert_eq!(
        f.kernel.take_calls(),
        [Call::JoinBridge(tap(1)), Call::ReplaceVmRules(id(1))]
    );
    assert_eq!(f.kernel.world(|w| w.taps()), [tap(1)]);
}

#[tokio::test]
async fn attach_without_forwards_touches_no_rules() {
    let f = fx().await;
    f.kernel.take_calls();
    attach(&f.netd, req(1, vec![])).await.unwrap();
    assert_eq!(
        f.kernel.take_calls(),
        [Call::CreateTap(tap(1)), Call::JoinBridge(tap(1))]
    );
}

#[tokio::test]
async fn bad_forwards_are_refused_before_any_kernel_call() {
    let f = fx().await;
    f.kernel.take_calls();
    let e = attach(&f.netd, req(1, vec![pf(8080), pf(8080)]))
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(e).code, ErrorCode::InvalidArgument);
    assert_eq!(f.kernel.take_calls(), []);
    assert_eq!(f.active(1).await, None);
}

#[tokio::test]
async fn a_failure_after_the_tap_was_made_removes_it_and_the_new_lease() {
    let f = fx().await;
    attach(&f.netd, req(2, vec![pf(9000)])).await.unwrap();
    f.kernel.take_calls();
    f.kernel.fail(Op::ReplaceVmRules);
    let e = attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap_err();
    assert_eq!(ApiError::from(e).code, ErrorCode::Internal);
    let calls = f.kernel.take_calls();
    assert!(calls.contains(&Call::DeleteLink(tap(1))), "{calls:?}");
    assert_eq!(calls.last(), Some(&Call::InstallRules(vec![id(2)])));
    assert_eq!(f.active(1).await, None, "the new lease is gone");
    f.kernel.world(|w| {
        assert_eq!(w.taps(), [tap(2)]);
        assert_eq!(w.rule_vms(), [id(2)]);
    });
}

#[tokio::test]
async fn a_failure_on_the_bridge_removes_the_tap_it_made() {
    let f = fx().await;
    f.kernel.fail(Op::JoinBridge);
    attach(&f.netd, req(1, vec![])).await.unwrap_err();
    assert_eq!(f.kernel.world(|w| w.taps()), Vec::<String>::new());
    assert_eq!(f.active(1).await, None);
}

#[tokio::test]
async fn a_failed_re_attach_keeps_the_earlier_tap_and_restores_the_earlier_rules() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    f.kernel.fail(Op::ReplaceVmRules);
    attach(&f.netd, req(1, vec![pf(8081)])).await.unwrap_err();
    let lease = f.netd.store.get(id(1)).await.unwrap().unwrap();
    assert_eq!(
        lease.port_forwards,
        [pf(8080)],
        "the previous lease is back"
    );
    f.kernel.world(|w| {
        assert_eq!(w.taps(), [tap(1)], "the tap existed before: it stays");
        let rules = &w.table.as_ref().unwrap()[&id(1)];
        assert_eq!(
            rules.forwards,
            [pf(8080)],
            "the table was rebuilt from the leases"
        );
    });
}

#[tokio::test]
async fn a_tap_that_cannot_be_created_leaves_nothing() {
    let f = fx().await;
    f.kernel.fail(Op::CreateTap);
    let e = attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap_err();
    assert!(e.to_string().contains(&tap(1)), "{e}");
    assert_eq!(f.active(1).await, None);
    assert_eq!(f.kernel.world(|w| w.rule_vms()), Vec::<VmId>::new());
}

#[tokio::test]
async fn detach_removes_exactly_what_attach_made() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    attach(&f.netd, req(2, vec![pf(8081)])).await.unwrap();
    f.kernel.take_calls();
    let reply = detach(&f.netd, stop(1, false)).await.unwrap();
    assert!(reply.tap_removed && !reply.released);
    assert_eq!(
        f.kernel.take_calls(),
        [
            Call::RemoveVmRules(vec![id(1)]),
            Call::DeleteLinks(vec![tap(1)]),
        ]
    );
    f.kernel.world(|w| {
        assert_eq!(w.taps(), [tap(2)]);
        assert_eq!(w.rule_vms(), [id(2)]);
        assert!(w.links.contains_key("bunit0"), "the bridge stays");
    });
    assert_eq!(f.active(1).await, Some(false), "stopped: the lease stays");

    let reply = detach(&f.netd, stop(2, true)).await.unwrap();
    assert!(reply.tap_removed && reply.released);
    assert_eq!(f.active(2).await, None, "deleted: the lease is released");
}

#[tokio::test]
async fn detach_of_an_unknown_vm_is_not_found_and_touches_nothing() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    f.kernel.take_calls();
    let e = detach(&f.netd, stop(9, false)).await.unwrap_err();
    assert_eq!(ApiError::from(e).code, ErrorCode::NotFound);
    assert_eq!(f.kernel.take_calls(), []);
}

#[tokio::test]
async fn detach_skips_nat_teardown_when_the_handles_are_already_gone() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    // Someone deleted the table and the tap.
    f.kernel.world(|w| {
        w.table = None;
        w.links.remove(&tap(1));
    });
    f.kernel.take_calls();
    let reply = detach(&f.netd, stop(1, false)).await.unwrap();
    assert!(!reply.tap_removed);
    let calls = f.kernel.take_calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::InstallRules(_))),
        "nothing to rebuild for a teardown: {calls:?}"
    );
    assert_eq!(f.active(1).await, Some(false));
}

#[tokio::test]
async fn rules_that_cannot_be_removed_are_dropped_by_rebuilding_the_table() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    attach(&f.netd, req(2, vec![pf(8081)])).await.unwrap();
    f.kernel.fail(Op::RemoveVmRules);
    f.kernel.take_calls();
    let reply = detach(&f.netd, stop(1, false)).await.unwrap();
    assert!(reply.tap_removed);
    assert_eq!(
        f.kernel.take_calls().last(),
        Some(&Call::InstallRules(vec![id(2)]))
    );
    assert_eq!(f.kernel.world(|w| w.rule_vms()), [id(2)]);
}

#[tokio::test]
async fn a_tap_that_cannot_be_deleted_keeps_the_lease_for_a_retry() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![])).await.unwrap();
    f.kernel.fail(Op::DeleteLinks);
    detach(&f.netd, stop(1, false)).await.unwrap_err();
    assert_eq!(f.active(1).await, Some(true));
    f.kernel.heal(Op::DeleteLinks);
    assert!(detach(&f.netd, stop(1, false)).await.unwrap().tap_removed);
    assert_eq!(f.active(1).await, Some(false));
}

#[tokio::test]
async fn a_batch_teardown_is_one_group_delete() {
    let f = fx().await;
    for n in 1..=5 {
        attach(&f.netd, req(n, vec![pf(8000 + u16::from(n))]))
            .await
            .unwrap();
    }
    f.kernel.take_calls();
    let ops = f.kernel.delete_ops_now();
    let batch: Vec<Teardown> = (1..=5)
        .map(|n| Teardown {
            vm: id(n),
            release: n == 5,
            stopped_at_ms: None,
            catch_up: false,
        })
        .collect();
    let done = teardown(&f.netd, &batch).await.unwrap();
    assert!(done.iter().all(|d| d.had_lease && d.tap_removed));
    assert_eq!(done.iter().filter(|d| d.released).count(), 1);
    let calls = f.kernel.take_calls();
    let deletes: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::DeleteLinks(_) | Call::DeleteLink(_)))
        .collect();
    assert_eq!(deletes.len(), 1, "{calls:?}");
    let Call::DeleteLinks(names) = deletes[0] else {
        unreachable!()
    };
    let mut names = names.clone();
    names.sort();
    assert_eq!(names, (1..=5).map(tap).collect::<Vec<_>>());
    assert_eq!(f.kernel.delete_ops_now() - ops, 1);
    f.kernel.world(|w| {
        assert!(w.taps().is_empty());
        assert!(w.rule_vms().is_empty());
    });
}

#[tokio::test]
async fn stopped_events_are_idempotent() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    let event = Teardown {
        vm: id(1),
        release: false,
        stopped_at_ms: Some(banger_bus::now_ms() + 1),
        catch_up: true,
    };
    let first = teardown(&f.netd, &[event.clone(), event.clone()])
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "duplicates in a batch are merged");
    assert!(first[0].tap_removed);
    let lease = f.netd.store.get(id(1)).await.unwrap().unwrap();

    f.kernel.take_calls();
    let again = teardown(&f.netd, &[event]).await.unwrap();
    assert!(again[0].had_lease && !again[0].tap_removed && !again[0].released);
    let calls = f.kernel.take_calls();
    assert!(
        calls.is_empty(),
        "a repeated event does no kernel work: {calls:?}"
    );
    let after = f.netd.store.get(id(1)).await.unwrap().unwrap();
    assert_eq!(after, lease, "the same lease, untouched");
    assert!(f.kernel.world(|w| w.taps().is_empty()));
}

/// The controller owns the teardown on the hot path (`net.detach` before `vm stop` or
/// `vm delete` returns); the `stopped`/`deleted` events that follow find the work done and
/// make no kernel call, and no lease write unless a release is still due.
#[tokio::test]
async fn events_after_the_controllers_detach_do_no_kernel_work() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    attach(&f.netd, req(2, vec![pf(8081)])).await.unwrap();
    // vm stop of 1 and vm delete of 2: the controller's calls.
    detach(&f.netd, stop(1, false)).await.unwrap();
    detach(&f.netd, stop(2, true)).await.unwrap();
    assert!(f.kernel.world(|w| w.taps().is_empty()));
    let stopped_lease = f.netd.store.get(id(1)).await.unwrap().unwrap();
    let ops = f.kernel.delete_ops_now();
    f.kernel.take_calls();

    let at = Some(banger_bus::now_ms() + 1);
    let events = [
        Teardown {
            vm: id(1),
            release: false,
            stopped_at_ms: at,
            catch_up: true,
        },
        Teardown {
            vm: id(2),
            release: false,
            stopped_at_ms: at,
            catch_up: true,
        },
        Teardown {
            vm: id(2),
            release: true,
            stopped_at_ms: None,
            catch_up: true,
        },
    ];
    let done = teardown(&f.netd, &events).await.unwrap();
    let calls = f.kernel.take_calls();
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(f.kernel.delete_ops_now(), ops);
    assert!(done[0].had_lease && !done[0].tap_removed && !done[0].released);
    assert!(
        !done[1].had_lease,
        "the deleted VM's lease went with the controller's call"
    );
    assert_eq!(
        f.netd.store.get(id(1)).await.unwrap().unwrap(),
        stopped_lease,
        "no lease write"
    );

    // A `deleted` event whose release the controller's call did not make (its delete
    // stopped after the stop): the release, still no kernel call.
    let done = teardown(
        &f.netd,
        &[Teardown {
            vm: id(1),
            release: true,
            stopped_at_ms: None,
            catch_up: true,
        }],
    )
    .await
    .unwrap();
    assert!(done[0].had_lease && done[0].released && !done[0].tap_removed);
    assert_eq!(f.active(1).await, None, "released");
    let calls = f.kernel.take_calls();
    assert!(calls.is_empty(), "{calls:?}");
}

/// When the controller's `net.detach` was missed, the event reaction still does it all.
#[tokio::test]
async fn an_event_whose_detach_was_missed_tears_the_vm_down() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    attach(&f.netd, req(2, vec![])).await.unwrap();
    let at = Some(banger_bus::now_ms() + 1);
    let done = teardown(
        &f.netd,
        &[
            Teardown {
                vm: id(1),
                release: false,
                stopped_at_ms: at,
                catch_up: true,
            },
            Teardown {
                vm: id(2),
                release: true,
                stopped_at_ms: None,
                catch_up: true,
            },
        ],
    )
    .await
    .unwrap();
    assert!(done[0].tap_removed && !done[0].released);
    assert!(done[1].tap_removed && done[1].released);
    assert!(f.kernel.world(|w| w.taps().is_empty()));
    assert!(f.kernel.world(|w| w.rule_vms().is_empty()));
    assert_eq!(f.active(1).await, Some(false), "lease kept, inactive");
    assert_eq!(f.active(2).await, None, "lease released");
}

#[tokio::test]
async fn a_stopped_event_older_than_the_last_attach_keeps_the_tap() {
    let f = fx().await;
    let stopped_at = banger_bus::now_ms().saturating_sub(1);
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    let done = teardown(
        &f.netd,
        &[Teardown {
            vm: id(1),
            release: false,
            stopped_at_ms: Some(stopped_at),
            catch_up: true,
        }],
    )
    .await
    .unwrap();
    assert!(done[0].had_lease && !done[0].tap_removed);
    assert_eq!(f.kernel.world(|w| w.taps()), [tap(1)]);
    assert_eq!(f.kernel.world(|w| w.rule_vms()), [id(1)]);
    assert_eq!(f.active(1).await, Some(true));
}

#[tokio::test]
async fn a_stopped_and_a_deleted_event_in_one_batch_release_the_lease() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![])).await.unwrap();
    let at = Some(banger_bus::now_ms() + 1);
    let done = teardown(
        &f.netd,
        &[
            Teardown {
                vm: id(1),
                release: false,
                stopped_at_ms: at,
                catch_up: true,
            },
            Teardown {
                vm: id(1),
                release: true,
                stopped_at_ms: None,
                catch_up: true,
            },
        ],
    )
    .await
    .unwrap();
    assert!(done[0].released && done[0].tap_removed);
    assert_eq!(f.active(1).await, None);
}

/// Three VMs with forwards (1 running, 2 stopped, 3 unknown to the controller), an orphan tap
/// and someone else's device with banger's prefix.
async fn reconcile_fx() -> Fx {
    let f = fx().await;
    for n in 1..=3 {
        attach(&f.netd, req(n, vec![pf(8000 + u16::from(n))]))
            .await
            .unwrap();
    }
    f.kernel.world(|w| {
        w.add_link(&tap(9), InfoKind::Tun, None);
        w.add_link("bgrveth", InfoKind::Veth, None);
    });
    f.kernel.take_calls();
    f
}

#[tokio::test]
async fn reconcile_removes_what_vms_that_are_not_running_hold_and_keeps_the_rest() {
    let f = reconcile_fx().await;
    let vms = HashMap::from([(id(1), VmState::Running), (id(2), VmState::Stopped)]);
    reconcile_with(&f.netd, Some(&vms), u64::MAX).await.unwrap();
    f.kernel.world(|w| {
        let mut links: Vec<&str> = w.links.keys().map(String::as_str).collect();
        links.sort_unstable();
        let want_tap = tap(1);
        let mut want = vec!["bgrveth", "bunit0", want_tap.as_str()];
        want.sort_unstable();
        assert_eq!(links, want);
        assert_eq!(w.rule_vms(), [id(1)]);
        assert!(w.forward_accepts);
    });
    assert_eq!(f.active(1).await, Some(true));
    assert_eq!(f.active(2).await, Some(false), "stopped: lease kept");
    assert_eq!(f.active(3).await, None, "unknown: lease released");
    // The table already matched the leases after the teardown: not rebuilt.
    let calls = f.kernel.take_calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::InstallRules(_))),
        "{calls:?}"
    );

    // A second pass finds nothing to do.
    reconcile_with(&f.netd, Some(&vms), u64::MAX).await.unwrap();
    let calls = f.kernel.take_calls();
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::DeleteLinks(_) | Call::RemoveVmRules(_))),
        "{calls:?}"
    );
}

#[tokio::test]
async fn reconcile_without_a_controller_removes_only_certain_orphans() {
    let f = reconcile_fx().await;
    reconcile_with(&f.netd, None, u64::MAX).await.unwrap();
    f.kernel.world(|w| {
        assert_eq!(
            w.taps().len(),
            4,
            "three VM taps and the veth: {:?}",
            w.taps()
        );
        assert!(!w.links.contains_key(&tap(9)));
        assert_eq!(w.rule_vms(), [id(1), id(2), id(3)]);
    });
}

#[tokio::test]
async fn reconcile_leaves_recent_leases_alone() {
    let f = reconcile_fx().await;
    reconcile_with(&f.netd, Some(&HashMap::new()), 0)
        .await
        .unwrap();
    for n in 1..=3 {
        assert_eq!(f.active(n).await, Some(true));
    }
    assert!(!f.kernel.world(|w| w.links.contains_key(&tap(9))));
}

#[tokio::test]
async fn reconcile_rebuilds_a_table_someone_removed_and_puts_the_bridge_back() {
    let f = reconcile_fx().await;
    f.kernel.world(|w| {
        w.table = None;
        w.links.remove("bunit0");
    });
    reconcile_with(&f.netd, None, u64::MAX).await.unwrap();
    let calls = f.kernel.take_calls();
    assert!(calls.contains(&Call::EnsureBridge("bunit0".into())));
    assert!(
        calls.iter().any(|c| matches!(c, Call::InstallRules(_))),
        "{calls:?}"
    );
    f.kernel.world(|w| {
        assert!(w.links.contains_key("bunit0"));
        assert_eq!(w.rule_vms(), [id(1), id(2), id(3)]);
    });
}

#[tokio::test]
async fn exit_when_idle_removes_the_table_the_accepts_and_the_bridge() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    reconcile_with(&f.netd, None, 0).await.unwrap();
    detach(&f.netd, stop(1, false)).await.unwrap();
    assert_eq!(on_exit(&f.netd).await.unwrap(), ExitOutcome::Removed);
    f.kernel.world(|w| {
        assert!(w.links.is_empty());
        assert!(w.table.is_none());
        assert!(!w.forward_accepts);
    });
}

#[tokio::test]
async fn exit_while_a_vm_holds_its_tap_keeps_everything() {
    let f = fx().await;
    attach(&f.netd, req(1, vec![pf(8080)])).await.unwrap();
    f.kernel.take_calls();
    let out = on_exit(&f.netd).await.unwrap();
    assert_eq!(
        out,
        ExitOutcome::Kept {
            active_leases: 1,
            interfaces: vec![tap(1)],
        }
    );
    assert_eq!(f.kernel.take_calls(), []);
}

/// Runs `net.detach` of `vms` at once while a turn is held up (the gate taken for writing), so
/// the first request forms a batch alone and every later one queues; releases the gate once
/// they all queued, and returns each reply in order.
async fn detach_all_at_once(
    f: &Fx,
    vms: &[(u8, bool)],
) -> Vec<Result<banger_proto::net::DetachReply, ApiError>> {
    let gate = f.netd.gate.write().await;
    let detaches = futures::future::join_all(
        vms.iter()
            .map(|&(n, rel)| detach_batched(&f.netd, stop(n, rel))),
    );
    let release = async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while f.netd.detaches.len() < vms.len() - 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the requests never queued"
            );
            tokio::task::yield_now().await;
        }
        drop(gate);
    };
    futures::future::join(detaches, release).await.0
}

#[tokio::test]
async fn concurrent_detaches_are_torn_down_together() {
    let f = fx().await;
    for n in 1..=6 {
        attach(&f.netd, req(n, vec![pf(8000 + u16::from(n))]))
            .await
            .unwrap();
    }
    let ops = f.kernel.delete_ops_now();
    let vms: Vec<(u8, bool)> = (1..=6).map(|n| (n, n == 6)).collect();
    let replies = detach_all_at_once(&f, &vms).await;
    for (reply, (n, release)) in replies.iter().zip(&vms) {
        let reply = reply.as_ref().unwrap();
        assert!(reply.tap_removed, "vm {n}");
        assert_eq!(reply.released, *release, "vm {n}");
    }
    assert_eq!(
        f.kernel.delete_ops_now() - ops,
        2,
        "the first request alone, then the five that queued meanwhile in one delete"
    );
    assert!(f.kernel.world(|w| w.taps().is_empty()));
    assert!(f.kernel.world(|w| w.rule_vms().is_empty()));
    for n in 1..=5 {
        assert_eq!(
            f.active(n).await,
            Some(false),
            "vm {n} keeps an inactive lease"
        );
    }
    assert_eq!(f.active(6).await, None, "released");
    assert!(f.netd.detaches.is_empty());
}

#[tokio::test]
async fn one_vm_failing_in_a_batch_fails_alone_and_an_unknown_vm_is_not_found() {
    let f = fx().await;
    for n in 1..=5 {
        attach(&f.netd, req(n, vec![])).await.unwrap();
    }
    f.kernel.fail_deleting(&tap(3));
    let vms = [
        (1, false),
        (2, false),
        (3, false),
        (9, false),
        (4, false),
        (5, true),
    ];
    let replies = detach_all_at_once(&f, &vms).await;
    for (reply, (n, _)) in replies.iter().zip(&vms) {
        match n {
            3 => assert_eq!(
                reply.as_ref().unwrap_err().code,
                ErrorCode::Internal,
                "vm 3's tap cannot be deleted"
            ),
            9 => assert_eq!(reply.as_ref().unwrap_err().code, ErrorCode::NotFound),
            _ => assert!(reply.as_ref().unwrap().tap_removed, "vm {n}: {reply:?}"),
        }
    }
    assert_eq!(
        f.kernel.world(|w| w.taps()),
        [tap(3)],
        "only the failed VM's tap is left"
    );
    assert_eq!(
        f.active(3).await,
        Some(true),
        "its lease stays, for a retry"
    );
    for n in [1, 2, 4] {
        assert_eq!(f.active(n).await, Some(false), "vm {n}");
    }
    assert_eq!(f.active(5).await, None, "released");
    assert_eq!(
        f.netd.store.get(id(9)).await.unwrap(),
        None,
        "nothing made for vm 9"
    );
}
