//! The controller with the real stord, netd and guest agent, and the Firecracker SIMULATOR
//! (`banger-fcsim`: no guest kernel runs; it opens the tap and wires it frame by frame to an
//! `eth0` in a guest network namespace whose kernel answers ping and TCP, loop-mounts the work
//! disk at /root and runs the real agent in that namespace behind hybrid vsock).
//! Everything runs as root inside a private network namespace with its own nats-server, bridge
//! name, subnet and nftables table.
//!
//! Needs the workspace binaries built into this target dir first:
//! `cargo build -p banger-fcsim -p banger-stord -p banger-netd -p banger-agent -p banger-vm-controller`.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

#[path = "common/sim.rs"]
mod sim;

use std::process::Command;
use std::time::Duration;

use banger_proto::net::NetListRequest;
use banger_proto::op::{Lab, net, store, vm};
use banger_proto::store::VolumeListRequest;
use banger_proto::vm::{ListVmsRequest, VmRefRequest, VmState};
use futures::StreamExt;
use sim::*;

#[test]
fn a_vm_boots_on_the_simulator_keeps_its_work_disk_and_leaves_nothing_behind() {
    if !banger_testkit::require_root() {
        return;
    }
    let bins = match bins() {
        Ok(b) => b,
        Err(why) => return banger_testkit::skip(&why),
    };
    let stack = Stack::start(bins, 5_000, "");
    let dir = stack.dir.path().to_owned();
    let runtime = stack.runtime_dir();
    let volumes = stack.stord_volumes();
    stack.run(move |bus| async move {
        register_image(&bus, &dir).await;
        let mut events = bus
            .client()
            .subscribe(bus.subjects().all_events())
            .await
            .unwrap();
        bus.client().flush().await.unwrap();
        let vm = create(&bus, "web", Duration::from_secs(120)).await;
        assert_eq!(vm.state, VmState::Running);
        let net = vm.network.clone().expect("a running vm has a network");
        assert!(link_exists(&net.tap), "tap {} exists", net.tap);

        // Every transition was published with the snapshot and the request's trace context.
        let mut kinds = Vec::new();
        while !kinds.contains(&"started".to_owned()) {
            let msg = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("events within 10 s")
                .unwrap();
            let traceparent = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .map(|v| v.as_str().to_owned());
            assert!(
                traceparent.is_some(),
                "{} carries a traceparent",
                msg.subject
            );
            let ev: banger_proto::event::VmEvent = serde_json::from_slice(&msg.payload).unwrap();
            assert_eq!(ev.vm.id, vm.id);
            kinds.push(ev.kind.to_string());
        }
        assert_eq!(kinds, ["created", "starting", "started"]);

        let stats = vm_op::<vm::Stats>(&bus, &vm).await.unwrap();
        assert!(stats.vmm_rss_bytes.is_some_and(|b| b > 0), "{stats:?}");

        // The agent answers through hybrid vsock, and the guest address answers ping across
        // the tap and the bridge.
        wait_healthy(&bus, &vm).await;
        let ping = Command::new("ping")
            .args(["-c", "1", "-W", "5", &net.ip])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "ping {}: {}",
            net.ip,
            String::from_utf8_lossy(&ping.stdout)
        );

        let w = exec(
            &bus,
            &vm,
            &["sh", "-c", "echo kept-across-restarts > /root/marker"],
        )
        .await;
        assert_eq!(w.exit_code, Some(0), "{w:?}");

        let stopped = vm_op::<vm::Stop>(&bus, &vm).await.unwrap();
        assert_eq!(stopped.vm.state, VmState::Stopped);
        assert!(!link_exists(&net.tap), "the tap is gone after stop");

        let started = vm_op::<vm::Start>(&bus, &vm).await.unwrap();
        assert_eq!(started.vm.state, VmState::Running);
        wait_healthy(&bus, &vm).await;
        let r = exec(&bus, &vm, &["cat", "/root/marker"]).await;
        assert_eq!(r.stdout.trim(), "kept-across-restarts", "{r:?}");

        let deleted = vm_op::<vm::Delete>(&bus, &vm).await.unwrap();
        assert_eq!(deleted.vm.id, vm.id);
        let list = call::<vm::List>(
            &bus,
            &Lab,
            &ListVmsRequest::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(list.vms.is_empty(), "no record");
        let leases = call::<net::List>(&bus, &host(), &NetListRequest {}, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(leases.leases.is_empty(), "no lease: {leases:?}");
        let vols = call::<store::VolumeList>(
            &bus,
            &host(),
            &VolumeListRequest::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(vols.volumes.is_empty(), "no volumes: {vols:?}");
        assert!(!link_exists(&net.tap), "no tap");
        assert!(
            dir_is_empty_or_missing(&runtime),
            "no sockets under {}",
            runtime.display()
        );
        assert!(
            dir_is_empty_or_missing(&volumes),
            "no volume files under {}",
            volumes.display()
        );
    });
    // No simulator process outlived its VM: the controller's children are all gone.
    let leftovers = Command::new("pgrep")
        .args([
            "-f",
            "--",
            &format!("--api-sock {}", stack.runtime_dir().display()),
        ])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "simulator processes left: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}

#[test]
fn a_simulated_guest_ignoring_ctrl_alt_del_is_stopped_by_force_and_the_reply_says_so() {
    if !banger_testkit::require_root() {
        return;
    }
    let bins = match bins() {
        Ok(b) => b,
        Err(why) => return banger_testkit::skip(&why),
    };
    let grace_ms = 500;
    let stack = Stack::start(bins, grace_ms, "stubborn=ignore-ctrl-alt-del");
    let dir = stack.dir.path().to_owned();
    stack.run(move |bus| async move {
        register_image(&bus, &dir).await;
        let vm = create(&bus, "stubborn", Duration::from_secs(120)).await;
        let tap = vm.network.clone().unwrap().tap;
        // The reply must come within the grace window plus a bound, or the request times out.
        let bound = Duration::from_millis(grace_ms) + Duration::from_secs(20);
        let stopped = call::<vm::Stop>(&bus, &host(), &VmRefRequest { id: vm.id.clone() }, bound)
            .await
            .unwrap();
        assert_eq!(stopped.vm.state, VmState::Stopped);
        let note = stopped.note.unwrap_or_default();
        assert!(
            note.contains("did not shut down within 500 ms") && note.contains("by force"),
            "{note}"
        );
        assert!(!link_exists(&tap));
    });
}
