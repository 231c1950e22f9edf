//! The VM lifecycle over the bus, with doubles of stord, netd, the agent and the hypervisor,
//! a real nats-server and a real SQLite database.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::time::Duration;

use banger_proto::ErrorCode;
use banger_proto::agent::{ExecRequest, ExecResult, Health};
use banger_proto::event::EventKind;
use banger_proto::op::{Operation, vm};
use banger_proto::vm::{
    LogsReply, LogsRequest, SetVmRequest, VmExecRequest, VmInfo, VmOpReply, VmRefRequest, VmState,
    VmStats,
};
use common::{Fakes, Fault, Harness, create_request, test_config};

#[tokio::test]
async fn create_boots_a_vm_and_publishes_every_transition_with_its_snapshot() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    assert_eq!(vm.state, VmState::Running);
    let net = vm.network.clone().expect("network attached");
    assert!(h.fakes.netd.has_tap(&vm.id));
    assert_eq!(h.fakes.stord.volume_count(), 1);
    let spec = h.fakes.vmm.last_launch("web").unwrap();
    assert!(
        spec.boot_args.contains(&format!("ip={}", net.ip)),
        "{}",
        spec.boot_args
    );
    assert!(spec.boot_args.starts_with("console=ttyS0"));
    assert_eq!(
        (spec.cpus, spec.memory_mib),
        (1, 512),
        "controller defaults"
    );
    assert_eq!(spec.tap, net.tap);

    // After the boot the controller probes the agent and publishes its first healthy answer
    // (what `vm create --wait` listens for).
    h.wait_event("web", EventKind::Health).await;
    assert_eq!(
        h.events.kinds("web"),
        [
            EventKind::Created,
            EventKind::Starting,
            EventKind::Started,
            EventKind::Health
        ]
    );
    let started = h
        .events
        .snapshot()
        .into_iter()
        .find(|e| e.kind == EventKind::Started)
        .unwrap();
    assert_eq!(started.vm, vm, "the event carries the full snapshot");

    let got: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(got, vm);
    assert_eq!(h.list().await, vec![vm]);
}

#[tokio::test]
async fn create_without_a_registered_image_names_banger_image_register() {
    let fakes = Fakes {
        stord: common::FakeStord::default(),
        ..Fakes::default()
    };
    let h = Harness::start_with(test_config(), fakes).await;
    let err = h.create_req(&create_request("web")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(
        err.message.contains("banger image register"),
        "{}",
        err.message
    );
    assert!(h.list().await.is_empty(), "nothing persisted");
}

#[tokio::test]
async fn zero_or_negative_cpus_or_memory_are_rejected_with_nothing_persisted() {
    let h = Harness::start().await;
    let subject = h.bus.subjects().vm_create();
    for body in [
        r#"{"name":"a","cpus":0}"#,
        r#"{"name":"a","cpus":-1}"#,
        r#"{"name":"a","memory_mib":0}"#,
        r#"{"name":"a","memory_mib":-512}"#,
    ] {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let err = h
            .bus
            .request::<_, VmOpReply>(subject.clone(), &v, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{body}: {err}");
        assert!(err.to_string().contains("greater than 0"), "{err}");
    }
    assert!(h.list().await.is_empty(), "nothing persisted");
    assert_eq!(h.fakes.stord.volume_count(), 0);

    let vm = h.create("a").await;
    let set_subject = vm::Set::subject(h.bus.subjects(), &h.host());
    for body in [
        serde_json::json!({"id": vm.id, "cpus": 0}),
        serde_json::json!({"id": vm.id, "memory_mib": -1}),
    ] {
        let err = h
            .bus
            .request::<_, VmOpReply>(set_subject.clone(), &body, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{body}");
    }
    let after: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!((after.cpus, after.memory_mib), (vm.cpus, vm.memory_mib));
}

#[tokio::test]
async fn names_are_unique_on_the_host_and_in_the_lab() {
    let h = Harness::start().await;
    h.create("web").await;
    let err = h.create_req(&create_request("web")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    let other = banger_proto::HostId::new("h2").unwrap();
    h.fakes.lab.names.lock().unwrap().insert(
        banger_proto::VmName::new("db").unwrap(),
        (other, banger_vm_controller::ids::new_vm_id()),
    );
    let err = h.create_req(&create_request("db")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("host h2"), "{}", err.message);
    assert_eq!(h.list().await.len(), 1);
    // Every create claimed its name first; the local duplicate gave its claim back, the name
    // another host holds was never recorded; a delete gives the name back.
    h.op::<vm::Delete>(&h.list().await[0].id).await.unwrap();
    assert_eq!(
        *h.fakes.lab.calls.lock().unwrap(),
        [
            "claim web",
            "claim web",
            "release web",
            "claim db",
            "release web"
        ]
    );
}

#[tokio::test]
async fn a_failed_boot_unwinds_everything_and_leaves_a_failed_record() {
    let h = Harness::start().await;
    h.fakes.vmm.fault("bad", Fault::FailConfigure);
    let err = h.create_req(&create_request("bad")).await.unwrap_err();
    assert!(
        err.message.contains("configuring the hypervisor"),
        "{}",
        err.message
    );
    let vms = h.list().await;
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    assert_eq!(vm.state, VmState::Failed);
    assert!(
        vm.reason
            .as_deref()
            .unwrap_or("")
            .contains("injected configure fault")
    );
    assert!(h.fakes.vmm.live("bad").is_empty(), "no process left");
    assert_eq!(h.fakes.netd.tap_count(), 0, "no tap left");
    assert_eq!(
        h.fakes.netd.lease_count(),
        0,
        "a new vm's lease is released"
    );
    assert_eq!(
        h.fakes.stord.volume_count(),
        0,
        "a new vm's volumes are removed"
    );
    h.wait_event("bad", EventKind::Failed).await;

    // A failed launch unwinds too, and the failed VM can be deleted cleanly.
    h.fakes.vmm.fault("bad2", Fault::FailLaunch);
    let err = h.create_req(&create_request("bad2")).await.unwrap_err();
    assert!(
        err.message.contains("spawning the hypervisor"),
        "{}",
        err.message
    );
    assert_eq!(h.fakes.netd.lease_count(), 0);
    h.op::<vm::Delete>(&vm.id).await.unwrap();
    assert_eq!(h.list().await.len(), 1);
}

/// Volumes and network are asked for at once: when one fails, what the other made is undone
/// all the same, whichever of the two it was.
#[tokio::test]
async fn a_boot_whose_volumes_or_network_fail_undoes_the_other() {
    let h = Harness::start().await;
    // stord fails while netd attaches: the tap and the new VM's lease go.
    h.fakes.stord.state.lock().unwrap().fail_create = true;
    let err = h.create_req(&create_request("novol")).await.unwrap_err();
    assert!(err.message.contains("disk full"), "{}", err.message);
    assert_eq!(h.fakes.netd.tap_count(), 0, "no tap left");
    assert_eq!(h.fakes.netd.lease_count(), 0, "the lease is released");
    assert_eq!(h.fakes.stord.volume_count(), 0);
    h.fakes.stord.state.lock().unwrap().fail_create = false;
    // netd fails while stord makes the volumes: the new VM's volumes go.
    h.fakes.netd.state.lock().unwrap().fail_attach = true;
    let err = h.create_req(&create_request("nonet")).await.unwrap_err();
    assert!(err.message.contains("no free address"), "{}", err.message);
    assert_eq!(h.fakes.stord.volume_count(), 0, "the volumes are removed");
    assert_eq!(h.fakes.netd.tap_count(), 0);
    let vms = h.list().await;
    assert_eq!(vms.len(), 2);
    assert!(vms.iter().all(|v| v.state == VmState::Failed), "{vms:?}");
    // An existing VM keeps its volumes and its lease when a start fails that way.
    h.fakes.netd.state.lock().unwrap().fail_attach = false;
    let vm = h.create("kept").await;
    h.op::<vm::Stop>(&vm.id).await.unwrap();
    h.fakes.stord.state.lock().unwrap().fail_create = true;
    h.op::<vm::Start>(&vm.id).await.unwrap_err();
    assert_eq!(h.fakes.netd.tap_count(), 0, "the tap goes");
    assert!(h.fakes.netd.has_lease(&vm.id), "the lease stays");
    assert_eq!(h.fakes.stord.volume_count(), 1, "the volumes stay");
    h.fakes.stord.state.lock().unwrap().fail_create = false;
    h.fakes.netd.state.lock().unwrap().fail_attach = true;
    h.op::<vm::Start>(&vm.id).await.unwrap_err();
    assert_eq!(h.fakes.stord.volume_count(), 1, "the volumes stay");
    assert!(h.fakes.netd.has_lease(&vm.id), "the lease stays");
    h.fakes.netd.state.lock().unwrap().fail_attach = false;
    let started = h.op::<vm::Start>(&vm.id).await.unwrap();
    assert_eq!(started.vm.state, VmState::Running);
}

#[tokio::test]
async fn stop_then_start_keeps_volumes_and_lease_and_delete_removes_everything() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    let ip = vm.network.clone().unwrap().ip;
    let stopped = h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(stopped.vm.state, VmState::Stopped);
    assert_eq!(
        stopped.note, None,
        "a guest that honours CtrlAltDel stops quietly"
    );
    assert!(!h.fakes.vmm.killed("web"));
    assert!(!h.fakes.netd.has_tap(&vm.id), "tap gone");
    assert!(h.fakes.netd.has_lease(&vm.id), "lease kept");
    assert_eq!(h.fakes.stord.volume_count(), 1, "volumes kept");

    let started = h.op::<vm::Start>(&vm.id).await.unwrap();
    assert_eq!(started.vm.state, VmState::Running);
    assert_eq!(started.vm.network.unwrap().ip, ip, "same address");

    let restarted = h.op::<vm::Restart>(&vm.id).await.unwrap();
    assert_eq!(restarted.vm.state, VmState::Running);
    assert_eq!(h.fakes.vmm.live("web").len(), 1);

    let logs: LogsReply = h
        .call::<vm::Logs>(&LogsRequest {
            id: vm.id.clone(),
            source: Default::default(),
            offset: Some(0),
            max_bytes: None,
        })
        .await
        .unwrap();
    assert!(logs.data.contains("boot web"), "{logs:?}");

    let deleted = h.op::<vm::Delete>(&vm.id).await.unwrap();
    assert_eq!(deleted.vm.id, vm.id);
    assert!(h.list().await.is_empty(), "record gone");
    assert_eq!(h.fakes.vmm.live_count(), 0, "process gone");
    assert_eq!(h.fakes.netd.lease_count(), 0, "lease released");
    assert_eq!(h.fakes.stord.volume_count(), 0, "volumes removed");
    assert!(!h.ctl.paths(&vm.id).log_dir.exists(), "logs removed");
    assert!(!h.ctl.paths(&vm.id).run_dir.exists(), "runtime dir removed");
    h.wait_event("web", EventKind::Deleted).await;
    let err = h.op::<vm::Get>(&vm.id).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn stop_falls_back_to_kill_when_guest_ignores_ctrl_alt_del() {
    let config = banger_vm_controller::config::ControllerConfig {
        stop_grace_ms: 300,
        ..test_config()
    };
    let h = Harness::start_with(config, Fakes::default()).await;
    h.fakes.vmm.fault("stubborn", Fault::IgnoreCtrlAltDel);
    let vm = h.create("stubborn").await;
    let reply = h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(reply.vm.state, VmState::Stopped);
    let note = reply.note.unwrap_or_default();
    assert!(
        note.contains("did not shut down within 300 ms") && note.contains("by force"),
        "{note}"
    );
    assert_eq!(
        h.fakes.vmm.state.lock().unwrap().ctrl_alt_dels,
        ["stubborn"]
    );
    assert!(h.fakes.vmm.killed("stubborn"), "forced path taken");
    assert!(h.fakes.vmm.live("stubborn").is_empty());
    assert!(!h.fakes.netd.has_tap(&vm.id));
    assert_eq!(
        reply.vm.reason.as_deref(),
        Some(note.as_str()),
        "the note is kept"
    );
}

#[tokio::test]
async fn kill_is_forced_at_once_without_ctrl_alt_del() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    let reply = h.op::<vm::Kill>(&vm.id).await.unwrap();
    assert_eq!(reply.vm.state, VmState::Stopped);
    assert!(reply.note.unwrap_or_default().contains("SIGKILL"));
    assert!(h.fakes.vmm.state.lock().unwrap().ctrl_alt_dels.is_empty());
    assert!(h.fakes.vmm.killed("web"));
}

#[tokio::test]
async fn set_is_validated_and_applied_on_the_next_start() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    let reply: VmOpReply = h
        .call::<vm::Set>(&SetVmRequest {
            id: vm.id.clone(),
            cpus: Some(banger_proto::CpuCount::new(2).unwrap()),
            memory_mib: Some(banger_proto::MemMib::new(1024).unwrap()),
            disk_mib: Some(banger_proto::MemMib::new(2048).unwrap()),
        })
        .await
        .unwrap();
    assert!(reply.note.unwrap_or_default().contains("next start"));
    assert_eq!(
        h.fakes.vmm.last_launch("web").unwrap().cpus,
        1,
        "not yet applied"
    );
    h.op::<vm::Restart>(&vm.id).await.unwrap();
    let spec = h.fakes.vmm.last_launch("web").unwrap();
    assert_eq!((spec.cpus, spec.memory_mib), (2, 1024));
    let disk = h.fakes.stord.state.lock().unwrap().volumes[&vm.id].disk_mib;
    assert_eq!(disk.get(), 2048, "work disk grown on start");

    let err = h
        .call::<vm::Set>(&SetVmRequest {
            id: vm.id.clone(),
            cpus: None,
            memory_mib: None,
            disk_mib: Some(banger_proto::MemMib::new(100).unwrap()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("cannot shrink"), "{}", err.message);
}

#[tokio::test]
async fn health_exec_stats_and_touch_answer_for_a_running_vm() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    let health: Health = h
        .call::<vm::Health>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    h.wait_event("web", EventKind::Health).await;
    let out: ExecResult = h
        .call::<vm::Exec>(&VmExecRequest {
            id: vm.id.clone(),
            exec: ExecRequest::new(["echo", "hi"]),
        })
        .await
        .unwrap();
    assert_eq!(out.stdout, "echo hi");
    let stats: VmStats = h
        .call::<vm::Stats>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(stats.vmm_rss_bytes, Some(1 << 20));
    assert!(stats.guest.is_some());
    let touched = h.op::<vm::Touch>(&vm.id).await.unwrap();
    assert!(touched.vm.touched_at_ms.is_some());

    h.op::<vm::Stop>(&vm.id).await.unwrap();
    let err = h
        .call::<vm::Health>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(
        err.message.contains("banger vm start web"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn reconcile_marks_a_vm_whose_process_vanished_stopped() {
    let config = banger_vm_controller::config::ControllerConfig {
        reconcile_interval_ms: 100,
        ..test_config()
    };
    let h = Harness::start_with(config, Fakes::default()).await;
    let vm = h.create("web").await;
    h.fakes.vmm.crash("web");
    h.wait_event("web", EventKind::Stopped).await;
    let got: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(got.state, VmState::Stopped);
    assert_eq!(got.reason.as_deref(), Some("the hypervisor process exited"));
    assert!(!h.fakes.netd.has_tap(&vm.id), "tap detached");
}

#[tokio::test]
async fn a_kernel_panic_on_the_console_fails_the_vm_at_once_with_the_exit_status_and_tail() {
    // The default reconcile interval (far longer than this test waits): the watch does it.
    use std::io::Write as _;
    let h = Harness::start().await;
    let vm = h.create("web").await;
    let console = h.ctl.paths(&vm.id).serial_log;
    std::fs::create_dir_all(console.parent().unwrap()).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&console)
        .unwrap();
    writeln!(log, "Run /usr/local/bin/banger-agent as init process").unwrap();
    writeln!(
        log,
        "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00"
    )
    .unwrap();
    h.wait_event("web", EventKind::Failed).await;
    let got: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(got.state, VmState::Failed);
    let reason = got.reason.unwrap();
    assert!(reason.contains("exit status 127"), "{reason}");
    assert!(reason.contains("loader/libraries"), "{reason}");
    assert!(
        reason.contains("Run /usr/local/bin/banger-agent"),
        "{reason}"
    );
    assert!(
        h.fakes.vmm.killed("web"),
        "the panicked guest's hypervisor is killed"
    );
    assert!(!h.fakes.netd.has_tap(&vm.id), "tap detached");
    // Health and exec of the failed VM say why.
    let err = h
        .call::<vm::Health>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("exit status 127"), "{}", err.message);
    // A later boot is watched from its own start: the old panic does not fail it again.
    h.op::<vm::Start>(&vm.id).await.unwrap();
    h.ctl.watch_round().await;
    let got: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(got.state, VmState::Running, "{:?}", got.reason);
}

#[tokio::test]
async fn a_restarted_controller_re_adopts_running_vms_without_stopping_them() {
    let mut h = Harness::start().await;
    let vm = h.create("web").await;
    let pid = h.fakes.vmm.live("web");
    h.restart_controller().await;
    let got: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(got.state, VmState::Running);
    assert_eq!(h.fakes.vmm.live("web"), pid, "same process, not restarted");
    assert!(!h.events.kinds("web").contains(&EventKind::Stopped));
    // And the re-adopted VM is still fully controllable.
    let stopped = h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(stopped.vm.state, VmState::Stopped);
}

#[tokio::test]
async fn a_controller_restart_fails_interrupted_creates_and_stops_dead_vms() {
    let mut h = Harness::start().await;
    let vm = h.create("web").await;
    // Simulate a crash mid-create of another VM: a bare `creating` record.
    let orphan = h
        .ctl
        .db()
        .insert(banger_vm_controller::store::NewVm {
            id: banger_vm_controller::ids::new_vm_id(),
            name: banger_proto::VmName::new("half").unwrap(),
            image: banger_proto::ImageName::new("debian").unwrap(),
            cpus: banger_proto::CpuCount::new(1).unwrap(),
            memory_mib: banger_proto::MemMib::new(256).unwrap(),
            disk_mib: banger_proto::MemMib::new(256).unwrap(),
            port_forwards: vec![],
            now_ms: 1,
        })
        .await
        .unwrap();
    h.fakes.vmm.crash("web");
    h.restart_controller().await;
    let web: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(web.state, VmState::Stopped);
    let half: VmInfo = h
        .call::<vm::Get>(&VmRefRequest {
            id: orphan.info.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(half.state, VmState::Failed);
    h.op::<vm::Delete>(&half.id).await.unwrap();
}

#[tokio::test]
async fn stopping_twenty_vms_at_once_overlaps() {
    // Each guest takes 1.5 s to shut down: a serial implementation would publish a `stopped`
    // before the next `stopping`; a concurrent one publishes all `stopping`s first.
    let fakes = Fakes {
        vmm: common::FakeVmm::new(Duration::from_millis(1500)),
        ..Fakes::default()
    };
    let h = Harness::start_with(test_config(), fakes).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(h.create(&format!("vm{i}")).await.id);
    }
    let stops = ids.iter().map(|id| h.op::<vm::Stop>(id));
    for r in futures::future::join_all(stops).await {
        assert_eq!(r.unwrap().vm.state, VmState::Stopped);
    }
    let events = h.events.clone();
    banger_testkit::wait_until("20 stopped events", Duration::from_secs(10), || {
        let n = events
            .snapshot()
            .iter()
            .filter(|e| e.kind == EventKind::Stopped)
            .count();
        async move { n == 20 }
    })
    .await;
    let evs = h.events.snapshot();
    let last_stopping = evs
        .iter()
        .filter(|e| e.kind == EventKind::Stopping)
        .map(|e| e.seq)
        .max()
        .unwrap();
    let first_stopped = evs
        .iter()
        .filter(|e| e.kind == EventKind::Stopped)
        .map(|e| e.seq)
        .min()
        .unwrap();
    assert!(
        last_stopping < first_stopped,
        "every stop began before any finished (last stopping #{last_stopping}, first stopped #{first_stopped})"
    );
}

#[tokio::test]
async fn operations_on_one_vm_are_serialised_by_its_lock() {
    // A stop and a start of the same VM sent together: whichever runs second sees the state
    // the first left, so the VM ends in a consistent state with exactly one or zero processes.
    let h = Harness::start().await;
    let vm = h.create("web").await;
    let (a, b) = tokio::join!(h.op::<vm::Stop>(&vm.id), h.op::<vm::Start>(&vm.id));
    a.unwrap();
    b.unwrap();
    let got: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    let live = h.fakes.vmm.live("web").len();
    match got.state {
        VmState::Running => assert_eq!(live, 1),
        VmState::Stopped => assert_eq!(live, 0),
        other => panic!("inconsistent state {other}"),
    }
}

#[tokio::test]
async fn a_delete_whose_volumes_stay_busy_leaves_a_failed_vm_that_a_second_delete_removes() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    h.fakes.stord.state.lock().unwrap().busy_deletes = 1;
    let err = h.op::<vm::Delete>(&vm.id).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        err.message.contains("removing the volumes"),
        "{}",
        err.message
    );
    let got: VmInfo = h
        .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
        .await
        .unwrap();
    assert_eq!(got.state, VmState::Failed);
    assert!(got.reason.unwrap_or_default().contains("busy"));
    assert!(
        h.fakes.vmm.live("web").is_empty(),
        "stopped before the removal"
    );

    h.op::<vm::Delete>(&vm.id).await.unwrap();
    assert!(h.list().await.is_empty());
    assert_eq!(h.fakes.stord.volume_count(), 0);
    assert_eq!(h.fakes.netd.lease_count(), 0);
}

#[tokio::test]
async fn a_deleted_vms_name_can_be_reused_at_once() {
    let h = Harness::start().await;
    let first = h.create("web").await;
    h.op::<vm::Delete>(&first.id).await.unwrap();
    let second = h.create("web").await;
    assert_ne!(first.id, second.id);
    assert_eq!(second.state, VmState::Running);
    assert_eq!(h.list().await, vec![second]);
}

#[tokio::test]
async fn a_create_naming_a_host_is_answered_by_that_host_only() {
    let h = Harness::start().await;
    let mut req = create_request("web");
    req.host = Some(h.host());
    let reply: VmOpReply = h.call::<vm::Create>(&req).await.unwrap();
    assert_eq!(reply.vm.host, h.host());

    let mut req = create_request("db");
    req.host = Some(banger_proto::HostId::new("elsewhere").unwrap());
    let err = h.create_req(&req).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("elsewhere"), "{}", err.message);
    assert_eq!(
        h.list().await.len(),
        1,
        "nothing persisted for the misrouted request"
    );
}

#[tokio::test]
async fn a_transient_netd_failure_on_stop_is_retried_and_the_tap_still_goes() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    h.fakes.netd.state.lock().unwrap().failing_detaches = 2;
    let reply = h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(reply.vm.state, VmState::Stopped);
    assert!(
        !h.fakes.netd.has_tap(&vm.id),
        "the third attempt removed the tap"
    );
}

#[tokio::test]
async fn with_stop_vms_on_exit_a_controller_shutdown_stops_every_running_vm_first() {
    let config = banger_vm_controller::config::ControllerConfig {
        stop_vms_on_exit: true,
        ..test_config()
    };
    let mut h = Harness::start_with(config, Fakes::default()).await;
    let web = h.create("web").await;
    let db = h.create("db").await;
    assert_eq!(h.fakes.vmm.live_count(), 2);
    // The shutdown half of a restart is what SIGTERM does.
    h.restart_controller().await;
    h.wait_event("web", EventKind::Stopped).await;
    h.wait_event("db", EventKind::Stopped).await;
    assert_eq!(h.fakes.vmm.live_count(), 0, "no hypervisor left running");
    for vm in [&web, &db] {
        assert!(
            !h.fakes.netd.has_tap(&vm.id),
            "{}'s tap was detached",
            vm.name
        );
        let got: VmInfo = h
            .call::<vm::Get>(&VmRefRequest { id: vm.id.clone() })
            .await
            .unwrap();
        assert_eq!(got.state, VmState::Stopped);
    }
}

/// Each state change numbers its event in its own write transaction, so an operation costs one
/// write per step: create 4 (record + `created`, `starting`, lease and pid, `started`), stop 2
/// (`stopping`, `stopped`), start 3, delete 2 (`deleting`, row gone + `deleted`), create
/// without starting 2. Before events were numbered in the state change's transaction these
/// were 8, 4, 6, 3 and 4. The events still carry consecutive sequence numbers.
#[tokio::test]
async fn each_operation_makes_one_write_transaction_per_state_change() {
    let h = Harness::start().await;
    // No agent answers, so the health probe after each boot publishes (and numbers) nothing.
    h.fakes
        .agent
        .healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let db = h.ctl.db().clone();
    let mut last = db.write_transactions();
    let mut writes = || {
        let now = db.write_transactions();
        let n = now - last;
        last = now;
        n
    };

    let vm = h.create("web").await;
    assert_eq!(writes(), 4, "create (and start)");
    h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(writes(), 2, "stop");
    h.op::<vm::Start>(&vm.id).await.unwrap();
    assert_eq!(writes(), 3, "start");
    h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(writes(), 2, "stop");
    h.op::<vm::Delete>(&vm.id).await.unwrap();
    assert_eq!(writes(), 2, "delete of a stopped vm");

    let mut req = create_request("cold");
    req.start = false;
    let cold = h.create_req(&req).await.unwrap().vm;
    assert_eq!(cold.state, VmState::Stopped);
    assert_eq!(writes(), 2, "create --no-start");
    h.op::<vm::Start>(&cold.id).await.unwrap();
    assert_eq!(writes(), 3, "start");
    h.op::<vm::Delete>(&cold.id).await.unwrap();
    assert_eq!(writes(), 4, "delete of a running vm (stop, then delete)");

    h.wait_event("cold", EventKind::Deleted).await;
    let seqs: Vec<u64> = h.events.snapshot().iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "one number per event, in publication order");
    assert_eq!(
        h.events.kinds("web"),
        [
            EventKind::Created,
            EventKind::Starting,
            EventKind::Started,
            EventKind::Stopping,
            EventKind::Stopped,
            EventKind::Starting,
            EventKind::Started,
            EventKind::Stopping,
            EventKind::Stopped,
            EventKind::Deleted,
        ]
    );
}

/// After every boot the controller asks the agent until it answers and publishes that as a
/// `health` event (what `vm create --wait` listens for), before any later stop's events.
#[tokio::test]
async fn every_boot_publishes_the_agents_first_healthy_answer() {
    let h = Harness::start().await;
    let vm = h.create("web").await;
    h.wait_event("web", EventKind::Health).await;
    h.op::<vm::Stop>(&vm.id).await.unwrap();
    h.op::<vm::Start>(&vm.id).await.unwrap();
    let events = h.events.clone();
    banger_testkit::wait_until("a second health event", Duration::from_secs(15), || {
        let n = events
            .kinds("web")
            .iter()
            .filter(|k| **k == EventKind::Health)
            .count();
        async move { n == 2 }
    })
    .await;
    assert_eq!(
        h.events.kinds("web"),
        [
            EventKind::Created,
            EventKind::Starting,
            EventKind::Started,
            EventKind::Health,
            EventKind::Stopping,
            EventKind::Stopped,
            EventKind::Starting,
            EventKind::Started,
            EventKind::Health,
        ]
    );
}

/// An exec right after a boot waits for the guest's agent instead of failing while the guest
/// is still booting (`banger vm start web && banger vm exec web -- ...`): the command reaches
/// the agent once it answers, and only then.
#[tokio::test]
async fn an_exec_right_after_a_boot_waits_for_the_agent() {
    use std::sync::atomic::Ordering;
    let h = Harness::start().await;
    h.fakes.agent.healthy.store(false, Ordering::SeqCst);
    let vm = h.create("web").await;
    let (bus, at) = (h.bus.clone(), h.host());
    let id = vm.id.clone();
    let exec = tokio::spawn(async move {
        let req = VmExecRequest {
            id,
            exec: ExecRequest::new(["echo", "hi"]),
        };
        bus.call::<vm::Exec>(&at, &req, Duration::from_secs(30))
            .await
    });
    // The controller keeps asking for health meanwhile and sends no exec.
    let calls = h.fakes.agent.health_calls.clone();
    let seen = calls.load(Ordering::SeqCst);
    banger_testkit::wait_until("more health requests", Duration::from_secs(15), || {
        let n = calls.load(Ordering::SeqCst);
        async move { n >= seen + 6 }
    })
    .await;
    assert!(
        !exec.is_finished(),
        "the exec gave up while the guest was booting"
    );
    assert_eq!(h.fakes.agent.exec_calls.load(Ordering::SeqCst), 0);
    h.fakes.agent.healthy.store(true, Ordering::SeqCst);
    let out = exec.await.unwrap().unwrap();
    assert_eq!(out.stdout, "echo hi");
    assert_eq!(h.fakes.agent.exec_calls.load(Ordering::SeqCst), 1);
}

/// 40 creates sent at once to one controller (what `banger vm create a b c ...` does): every VM
/// runs, each with its own address and vsock CID, a taken name fails alone, and the events of
/// all of them are published in sequence order (each operation only takes turns for its write:
/// see `Events`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_all_run_with_distinct_addresses_and_ordered_events() {
    let h = Harness::start().await;
    h.create("taken").await;
    let names: Vec<String> = (0..40)
        .map(|i| format!("c{i}"))
        .chain(["taken".to_owned()])
        .collect();
    let reqs: Vec<_> = names.iter().map(|n| create_request(n)).collect();
    let replies = futures::future::join_all(reqs.iter().map(|r| h.create_req(r))).await;
    let mut ips = std::collections::HashSet::new();
    let mut cids = std::collections::HashSet::new();
    for (name, reply) in names.iter().zip(replies) {
        if name == "taken" {
            assert_eq!(reply.unwrap_err().code, ErrorCode::Conflict);
            continue;
        }
        let vm = reply.unwrap().vm;
        assert_eq!(vm.state, VmState::Running, "{name}");
        assert!(
            ips.insert(vm.network.unwrap().ip),
            "{name}: address given twice"
        );
        let spec = h.fakes.vmm.last_launch(name).unwrap();
        assert!(cids.insert(spec.vsock_cid), "{name}: vsock cid given twice");
    }
    assert_eq!(ips.len(), 40);
    let events = h.events.clone();
    banger_testkit::wait_until("41 started events", Duration::from_secs(10), || {
        let n = events
            .snapshot()
            .iter()
            .filter(|e| e.kind == EventKind::Started)
            .count();
        async move { n == 41 }
    })
    .await;
    let seqs: Vec<u64> = h.events.snapshot().iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "one number per event, published in sequence order"
    );
}
