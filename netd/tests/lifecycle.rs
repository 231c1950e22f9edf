//! netd for real, as root, each test in its own network namespace with its own nats-server:
//! taps on the bridge, leases that follow `stopped`/`deleted`, restarts, bad input, and the
//! seed regression of rule teardown after the rules are gone.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::collections::HashSet;

use banger_proto::ErrorCode;
use banger_proto::event::EventKind;
use banger_proto::net::{
    DetachReply, DetachRequest, NetStatus, NetStatusRequest, PortForward, Protocol,
};
use banger_proto::op::net;
use banger_testkit::require_root;
use common::{Fixture, GUEST_DNS, Options, vm_id};

fn tcp(host: u16, guest: u16) -> PortForward {
    PortForward {
        host_port: host,
        guest_port: guest,
        protocol: Protocol::Tcp,
    }
}

fn status(fx: &Fixture) -> NetStatus {
    fx.request::<net::Status>(NetStatusRequest {}).unwrap()
}

#[test]
fn attach_puts_each_vm_tap_on_the_bridge_with_a_stable_lease() {
    if !require_root() {
        return;
    }
    let fx = Fixture::start("at", Options::default());
    let (a, b) = (vm_id(1), vm_id(2));
    let la = fx.attach(&a, "alpha", vec![]);
    let lb = fx.attach(&b, "beta", vec![tcp(8080, 80)]);

    assert_eq!(la.tap, format!("bgr{}", a.short()));
    assert_ne!(la.ip, lb.ip);
    assert_ne!(la.mac, lb.mac);
    assert!(la.mac.starts_with("06:"));
    let gw = fx.subnet.replace(".0/24", ".1");
    assert_eq!(la.gateway, gw);
    assert_eq!(la.prefix_len, 24);
    assert_eq!(
        la.kernel_ip_arg,
        format!(
            "ip={}::{gw}:255.255.255.0:alpha:eth0:off:{GUEST_DNS}",
            la.ip
        )
    );
    let mut expected = vec![la.tap.clone(), lb.tap.clone()];
    expected.sort();
    assert_eq!(fx.taps_on_bridge(), expected);

    // Idempotent: the same lease again, still two taps.
    assert_eq!(fx.attach(&a, "alpha", vec![]), la);
    assert_eq!(fx.taps_on_bridge().len(), 2);

    let leases = fx.leases();
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().all(|l| l.tap_present));
    assert_eq!(
        leases.iter().find(|l| l.vm_id == b).unwrap().port_forwards,
        vec![tcp(8080, 80)]
    );
    let st = status(&fx);
    assert!(st.bridge_up && st.nat_table_present, "{st:?}");
    assert_eq!((st.leases, st.taps), (2, 2));
    assert_eq!(st.subnet, fx.subnet);
    let table = fx.table_text().unwrap();
    assert!(table.contains("masquerade"), "{table}");
    assert!(table.contains(&format!("dnat to {}:80", lb.ip)), "{table}");
    // The masquerade, read back as JSON: the VM subnet, towards every interface but the bridge.
    let rules = fx.table_rules_json();
    let masq: Vec<_> = rules
        .iter()
        .filter(|r| r["chain"] == "postrouting")
        .collect();
    assert_eq!(masq.len(), 1, "{rules:?}");
    let expr = masq[0]["expr"].as_array().unwrap();
    let oif = expr
        .iter()
        .find(|e| e["match"]["left"]["meta"]["key"] == "oifname")
        .unwrap();
    assert_eq!(oif["match"]["op"], "!=");
    assert_eq!(oif["match"]["right"], fx.bridge.as_str());
    let saddr = expr
        .iter()
        .find(|e| e["match"]["left"]["payload"]["field"] == "saddr")
        .unwrap();
    let (net, len) = fx.subnet.split_once('/').unwrap();
    assert_eq!(saddr["match"]["right"]["prefix"]["addr"], net);
    assert_eq!(
        saddr["match"]["right"]["prefix"]["len"],
        len.parse::<u64>().unwrap()
    );
    assert!(
        expr.iter().any(|e| e.get("masquerade").is_some()),
        "{expr:?}"
    );
    fx.assert_nothing_leaked();
}

#[test]
fn stopped_event_removes_the_tap_and_keeps_the_lease_and_deleted_releases_it() {
    if !require_root() {
        return;
    }
    let fx = Fixture::start("ev", Options::default());
    let (a, b) = (vm_id(1), vm_id(2));
    let la = fx.attach(&a, "alpha", vec![tcp(2222, 22)]);
    let lb = fx.attach(&b, "beta", vec![]);

    fx.publish(&a, EventKind::Stopped);
    fx.wait("alpha's tap to go", || !fx.has_link(&la.tap));
    assert!(fx.has_link(&lb.tap), "beta's tap must stay");
    let kept = fx.leases().into_iter().find(|l| l.vm_id == a).unwrap();
    assert!(!kept.tap_present);
    assert_eq!(
        (kept.ip.as_str(), kept.mac.as_str()),
        (la.ip.as_str(), la.mac.as_str())
    );
    let table = fx.table_text().unwrap();
    assert!(
        !table.contains("dnat to"),
        "stopped VM's forward must go: {table}"
    );

    // Started again: same address.
    let again = fx.attach(&a, "alpha", vec![tcp(2222, 22)]);
    assert_eq!((again.ip, again.mac), (la.ip.clone(), la.mac.clone()));

    fx.publish(&a, EventKind::Deleted);
    fx.wait("alpha's lease to be released", || {
        fx.leases().iter().all(|l| l.vm_id != a)
    });
    assert!(!fx.has_link(&la.tap));
    assert!(!fx.table_text().unwrap().contains("dnat to"));
    // Events of VMs without a lease change nothing.
    fx.publish(&vm_id(99), EventKind::Deleted);
    assert_eq!(fx.leases().len(), 1);
    assert_eq!(fx.taps_on_bridge(), vec![lb.tap]);
    fx.assert_nothing_leaked();
}

#[test]
fn restart_removes_orphan_taps_and_keeps_leases() {
    if !require_root() {
        return;
    }
    let mut fx = Fixture::start("rs", Options::default());
    let (a, b) = (vm_id(1), vm_id(2));
    let la = fx.attach(&a, "alpha", vec![]);
    let lb = fx.attach(&b, "beta", vec![]);
    // beta is detached (stopped) but keeps its lease.
    let d: DetachReply = fx
        .request::<net::Detach>(DetachRequest {
            vm_id: b.clone(),
            release: false,
        })
        .unwrap();
    assert_eq!(
        d,
        DetachReply {
            tap_removed: true,
            released: false
        }
    );
    fx.stop_netd();

    // While netd is down: an orphan with banger's prefix, beta's tap reappearing, and an
    // unrelated tap that must not be touched.
    for name in ["bgr0000deadbeef", lb.tap.as_str(), "keepme0"] {
        fx.ns.exec(&["ip", "tuntap", "add", name, "mode", "tap"]);
    }
    fx.start_netd();
    fx.wait("orphan taps to be removed", || {
        !fx.has_link("bgr0000deadbeef") && !fx.has_link(&lb.tap)
    });
    assert!(
        fx.has_link("keepme0"),
        "a tap that is not banger's was removed"
    );
    assert!(fx.has_link(&la.tap), "an attached VM's tap was removed");

    let leases = fx.leases();
    assert_eq!(leases.len(), 2, "leases survive a restart");
    let again = fx.attach(&a, "alpha", vec![]);
    assert_eq!(again, la);
    let b_again = fx.attach(&b, "beta", vec![]);
    assert_eq!((b_again.ip, b_again.mac), (lb.ip, lb.mac));
    fx.assert_nothing_leaked();
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    if !require_root() {
        return;
    }
    // A /29 holds the network, the gateway, five VMs and the broadcast address.
    let fx = Fixture::start(
        "bad",
        Options {
            prefix: 29,
            ..Options::default()
        },
    );
    let mut ips = HashSet::new();
    for n in 1..=5 {
        let forwards = if n == 1 { vec![tcp(8080, 80)] } else { vec![] };
        ips.insert(fx.attach(&vm_id(n), &format!("vm{n}"), forwards).ip);
    }
    assert_eq!(ips.len(), 5);
    let before_leases = fx.leases();
    let before_links = fx.links();
    let before_table = fx.table_text();
    let unchanged = || {
        assert_eq!(fx.leases(), before_leases);
        assert_eq!(fx.links(), before_links);
        assert_eq!(fx.table_text(), before_table);
    };

    let e = fx.try_attach(&vm_id(6), "vm6", vec![]).unwrap_err();
    assert_eq!(e.code, ErrorCode::Exhausted, "{e}");
    assert!(e.message.contains("no free address"), "{e}");
    unchanged();

    let e = fx
        .request::<net::Detach>(DetachRequest {
            vm_id: vm_id(77),
            release: true,
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    assert!(e.message.contains(vm_id(77).as_str()), "{e}");
    unchanged();

    // Port 0, a host port given twice, a host port another VM has.
    let e = fx
        .try_attach(&vm_id(2), "vm2", vec![tcp(0, 80)])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    let e = fx
        .try_attach(&vm_id(2), "vm2", vec![tcp(9000, 80), tcp(9000, 81)])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    let e = fx
        .try_attach(&vm_id(2), "vm2", vec![tcp(8080, 80)])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{e}");
    assert!(e.message.contains("8080"), "{e}");
    unchanged();

    // A malformed id never reaches the handler.
    let e = fx
        .raw::<net::Detach>(serde_json::json!({"vm_id": "../../etc", "release": true}))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    unchanged();
    fx.assert_nothing_leaked();
}

#[test]
fn detach_skips_rule_teardown_when_the_rules_are_already_gone_and_reconcile_restores_the_table() {
    if !require_root() {
        return;
    }
    let fx = Fixture::start(
        "sk",
        Options {
            reconcile_secs: 1,
            ..Options::default()
        },
    );
    let (a, b) = (vm_id(1), vm_id(2));
    let la = fx.attach(&a, "alpha", vec![tcp(8080, 80)]);
    let lb = fx.attach(&b, "beta", vec![tcp(8081, 80)]);
    // Someone flushes banger's table: the handles of alpha's rules are gone.
    fx.ns.exec(&["nft", "delete", "table", "ip", &fx.table]);

    let d: DetachReply = fx
        .request::<net::Detach>(DetachRequest {
            vm_id: a.clone(),
            release: false,
        })
        .unwrap();
    assert!(d.tap_removed);
    assert!(!fx.has_link(&la.tap));

    // Reconciliation puts the table back, with beta's forward only.
    fx.wait("the table to be restored", || {
        fx.table_text()
            .is_some_and(|t| t.contains(&format!("dnat to {}:80", lb.ip)))
    });
    let table = fx.table_text().unwrap();
    assert!(table.contains("masquerade"), "{table}");
    assert!(!table.contains(&format!("dnat to {}:", la.ip)), "{table}");
    assert!(status(&fx).nat_table_present);
    fx.assert_nothing_leaked();
}

#[test]
fn an_idle_netd_removes_its_table_and_bridge_on_exit_and_keeps_the_leases() {
    if !require_root() {
        return;
    }
    let mut fx = Fixture::start("ex", Options::default());
    let a = vm_id(1);
    let la = fx.attach(&a, "alpha", vec![tcp(8080, 80)]);
    // Stopped: the tap goes, the lease stays. No VM holds the network any more.
    assert!(fx.detach(&a, false).tap_removed);
    assert!(fx.has_link(&fx.bridge) && fx.table_text().is_some());

    fx.stop_netd();
    assert!(!fx.has_link(&fx.bridge), "the idle bridge must go on exit");
    assert!(fx.table_text().is_none(), "the idle table must go on exit");
    let banger_links: Vec<_> = fx
        .links()
        .into_iter()
        .filter(|(n, _)| n.starts_with("bgr"))
        .collect();
    assert!(banger_links.is_empty(), "{banger_links:?}");

    // The next start puts everything back, and the VM gets its address again.
    fx.start_netd();
    assert!(fx.has_link(&fx.bridge) && fx.table_text().is_some());
    let again = fx.attach(&a, "alpha", vec![tcp(8080, 80)]);
    assert_eq!((again.ip, again.mac, again.tap), (la.ip, la.mac, la.tap));
    fx.assert_nothing_leaked();
}

#[test]
fn a_busy_netd_leaves_taps_bridge_and_rules_on_exit_so_vms_keep_their_network() {
    if !require_root() {
        return;
    }
    let mut fx = Fixture::start("bz", Options::default());
    let a = vm_id(1);
    let la = fx.attach(&a, "alpha", vec![tcp(8080, 80)]);
    let table_before = fx.table_text().unwrap();

    fx.stop_netd();
    assert_eq!(fx.taps_on_bridge(), vec![la.tap.clone()]);
    assert_eq!(fx.table_text().as_deref(), Some(table_before.as_str()));

    fx.start_netd();
    assert_eq!(fx.taps_on_bridge(), vec![la.tap.clone()]);
    assert!(
        fx.table_text()
            .unwrap()
            .contains(&format!("dnat to {}:80", la.ip))
    );
    assert_eq!(fx.attach(&a, "alpha", vec![tcp(8080, 80)]), la);
    fx.assert_nothing_leaked();
}

#[test]
fn a_burst_of_stopped_events_tears_all_taps_down_and_keeps_every_lease() {
    if !require_root() {
        return;
    }
    let fx = Fixture::start("bu", Options::default());
    let vms: Vec<_> = (1..=20).map(vm_id).collect();
    for (i, vm) in vms.iter().enumerate() {
        let forwards = if i % 5 == 0 {
            vec![tcp(9000 + u16::try_from(i).unwrap(), 80)]
        } else {
            vec![]
        };
        fx.attach(vm, &format!("vm{i}"), forwards);
    }
    let keep = fx.attach(&vm_id(99), "keep", vec![tcp(8999, 80)]);
    assert_eq!(fx.taps_on_bridge().len(), 21);

    fx.publish_many(&vms, EventKind::Stopped);
    fx.wait("every stopped VM's tap to go", || {
        fx.taps_on_bridge() == vec![keep.tap.clone()]
    });
    let leases = fx.leases();
    assert_eq!(leases.len(), 21, "stopping keeps the leases");
    assert_eq!(leases.iter().filter(|l| l.tap_present).count(), 1);
    let table = fx.table_text().unwrap();
    assert_eq!(table.matches("dnat to").count(), 2, "{table}");
    assert!(
        table.contains(&format!("dnat to {}:80", keep.ip)),
        "{table}"
    );

    fx.publish_many(&vms, EventKind::Deleted);
    fx.wait("every deleted VM's lease to be released", || {
        fx.leases().len() == 1
    });
    // Nothing is left in the teardown group.
    let grouped = fx.ns.exec(&["ip", "-o", "link", "show", "group", "48879"]);
    assert!(grouped.trim().is_empty(), "{grouped}");
    fx.assert_nothing_leaked();
}

#[test]
fn delete_many_removes_exactly_the_given_taps_in_one_group_delete() {
    if !require_root() {
        return;
    }
    let ns = banger_testkit::netns::NetNs::create("dm");
    let names: Vec<String> = (0..30).map(|i| format!("bgrdm{i:03}")).collect();
    let (deleted, after) = ns.block_on(move || async move {
        let links = banger_netd::link::Links::connect().unwrap();
        for name in names.iter().map(String::as_str).chain(["other0"]) {
            banger_netd::tap::create_persistent(name).unwrap();
        }
        // A name that is already gone is skipped, not an error.
        let mut with_gone = names.clone();
        with_gone.push("bgrgone".to_owned());
        let deleted = links.delete_many(&with_gone, 4242).await.unwrap();
        let after: Vec<String> = links
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        let mut deleted: Vec<String> = deleted.into_iter().collect();
        deleted.sort();
        assert_eq!(deleted, names);
        (deleted.len(), after)
    });
    assert_eq!(deleted, 30);
    let mut after = after;
    after.sort();
    assert_eq!(after, ["lo", "other0"]);
}

#[test]
fn a_deleted_tap_is_gone_and_its_name_free_when_the_deletion_answers() {
    if !require_root() {
        return;
    }
    // A deletion answers when the kernel has unlisted the device (its RTM_DELLINK
    // notification), before the kernel has freed it: what a caller sees must already be true.
    let ns = banger_testkit::netns::NetNs::create("dl");
    ns.exec(&["ip", "link", "add", "bgrdlbr", "type", "bridge"]);
    let (early, rounds) = ns.block_on(|| async {
        let links = banger_netd::link::Links::connect().unwrap();
        let bridge = links.by_name("bgrdlbr").await.unwrap().unwrap().index;
        let rounds = 10;
        for round in 0..rounds {
            // The same names every round: a notification of an earlier round's device must
            // not answer for this round's.
            let names: Vec<String> = (0..round % 3 + 1).map(|i| format!("bgrdl{i}")).collect();
            for name in &names {
                banger_netd::tap::create_persistent(name).unwrap();
                let tap = links.by_name(name).await.unwrap().unwrap().index;
                links.join_bridge(tap, bridge, 1500).await.unwrap();
            }
            let gone = links.delete_many(&names, 4244).await.unwrap();
            assert_eq!(gone.len(), names.len(), "round {round}");
            for name in &names {
                assert_eq!(
                    links.by_name(name).await.unwrap(),
                    None,
                    "round {round}: {name}"
                );
            }
            let ports = links
                .list()
                .await
                .unwrap()
                .into_iter()
                .filter(|l| l.master == Some(bridge))
                .count();
            assert_eq!(ports, 0, "round {round}: the bridge still has ports");
        }
        // A device that is not there is reported, not waited for.
        assert!(
            links
                .delete_many(&["bgrdlnone".to_owned()], 4244)
                .await
                .unwrap()
                .is_empty()
        );
        (links.answered_on_unlisting(), rounds)
    });
    // The kernel's acknowledgement comes an RCU barrier (~20 ms) after the notification, so
    // the notification answers nearly always; one answer is the proof that the path works.
    assert!(
        (1..=rounds).contains(&early),
        "{early} of {rounds} deletions were answered on unlisting"
    );
}

#[test]
fn concurrent_deletions_are_merged_into_one_kernel_operation() {
    if !require_root() {
        return;
    }
    let ns = banger_testkit::netns::NetNs::create("cm");
    let (answers, ops, left) = ns.block_on(|| async {
        let links = banger_netd::link::Links::connect().unwrap();
        let names: Vec<String> = (0..10).map(|i| format!("bgrcm{i:02}")).collect();
        for name in &names {
            banger_netd::tap::create_persistent(name).unwrap();
        }
        let before = links.delete_ops();
        // Ten callers at once, one tap each (ten `net.detach` of a batch `vm stop`). On this
        // current-thread runtime every job is queued before the worker first runs.
        let answers: Vec<usize> = futures::future::join_all(
            names
                .iter()
                .map(|n| links.delete_many(std::slice::from_ref(n), 4243)),
        )
        .await
        .into_iter()
        .map(|r| r.unwrap().len())
        .collect();
        let ops = links.delete_ops() - before;
        let left = links
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.name.starts_with("bgrcm"))
            .count();
        (answers, ops, left)
    });
    assert_eq!(answers, vec![1; 10], "each caller hears about its own tap");
    assert_eq!(ops, 1, "ten deletions, one group delete");
    assert_eq!(left, 0);
}

#[test]
fn concurrent_detaches_of_a_batch_each_remove_their_own_vm() {
    if !require_root() {
        return;
    }
    let fx = Fixture::start("cd", Options::default());
    let vms: Vec<_> = (1..=20).map(vm_id).collect();
    let leases: Vec<_> = vms
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            let forwards = if i % 4 == 0 {
                vec![tcp(9000 + u16::try_from(i).unwrap(), 80)]
            } else {
                vec![]
            };
            fx.attach(vm, &format!("vm{i}"), forwards)
        })
        .collect();
    assert_eq!(fx.taps_on_bridge().len(), 20);
    // Twenty at once, every other one a delete (release), and one VM netd never saw.
    let mut batch: Vec<_> = vms
        .iter()
        .enumerate()
        .map(|(i, vm)| (vm.clone(), i % 2 == 1))
        .collect();
    batch.push((vm_id(99), false));
    let replies = fx.detach_at_once(&batch);
    for (i, reply) in replies.iter().take(20).enumerate() {
        let reply = reply.as_ref().unwrap();
        assert!(reply.tap_removed, "vm {i}: {reply:?}");
        assert_eq!(reply.released, i % 2 == 1, "vm {i}");
    }
    assert_eq!(replies[20].as_ref().unwrap_err().code, ErrorCode::NotFound);
    assert!(fx.taps_on_bridge().is_empty(), "{:?}", fx.taps_on_bridge());
    for l in &leases {
        assert!(!fx.has_link(&l.tap), "{} left", l.tap);
    }
    let table = fx.table_text().unwrap();
    assert!(!table.contains("dnat to"), "every VM's rules went: {table}");
    let left: HashSet<_> = fx.leases().into_iter().map(|l| l.vm_id).collect();
    let kept: HashSet<_> = vms.iter().step_by(2).cloned().collect();
    assert_eq!(
        left, kept,
        "stopped VMs keep their lease, deleted ones lose it"
    );
    fx.assert_nothing_leaked();
}

#[test]
fn a_stopped_event_overtaken_by_the_restarts_attach_leaves_the_new_tap_alone() {
    if !require_root() {
        return;
    }
    let fx = Fixture::start("ov", Options::default());
    let (a, b) = (vm_id(1), vm_id(2));
    // alpha restarts: stop (detach) at `stopped_at`, then start (attach) again, and only then
    // does netd see alpha's `stopped` event.
    fx.attach(&a, "alpha", vec![tcp(8080, 80)]);
    fx.detach(&a, false);
    let stopped_at = banger_bus::now_ms();
    fx.wait("the clock to move past the stop", || {
        banger_bus::now_ms() > stopped_at
    });
    let la = fx.attach(&a, "alpha", vec![tcp(8080, 80)]);
    let lb = fx.attach(&b, "beta", vec![]);
    fx.publish_at(std::slice::from_ref(&a), EventKind::Stopped, stopped_at);
    // beta's (current) event comes after alpha's on the same subject, so once beta's tap is gone
    // alpha's event has been handled too.
    fx.publish(&b, EventKind::Stopped);
    fx.wait("beta's tap to go", || !fx.has_link(&lb.tap));
    assert_eq!(
        fx.taps_on_bridge(),
        vec![la.tap.clone()],
        "the restarted VM kept its tap"
    );
    assert!(
        fx.table_text()
            .unwrap()
            .contains(&format!("dnat to {}:80", la.ip))
    );

    // A stop after the attach still tears it down.
    fx.publish(&a, EventKind::Stopped);
    fx.wait("alpha's tap to go", || !fx.has_link(&la.tap));
    fx.assert_nothing_leaked();
}

#[test]
fn concurrent_interface_listings_on_one_connection_all_succeed() {
    if !require_root() {
        return;
    }
    // Regression: concurrent detaches each list the interfaces, and the kernel refuses a second
    // dump on one netlink socket with EBUSY while the first runs.
    let ns = banger_testkit::netns::NetNs::create("ls");
    let failures = ns.block_on(|| async {
        let links = banger_netd::link::Links::connect().unwrap();
        for i in 0..20 {
            banger_netd::tap::create_persistent(&format!("bgrls{i:02}")).unwrap();
        }
        futures::future::join_all((0..20).map(|_| links.list()))
            .await
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    });
    assert!(failures.is_empty(), "{failures:?}");
}
