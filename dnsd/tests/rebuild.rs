//! dnsd converges on the controllers' `vm.list`: a restarted dnsd serves VMs started while it
//! was down, a missed event is repaired within one rebuild period, and a host that does not
//! answer keeps its records. These run the real `banger-dnsd` binary where a restart is part of
//! the story (`cargo build -p banger-dnsd` first).

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::time::Duration;

use banger_proto::dns::DnsStatusRequest;
use banger_proto::event::EventKind;
use banger_proto::op::{Lab, dns};
use banger_testkit::{NatsServer, free_port, wait_until};
use common::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;

#[tokio::test]
async fn a_restarted_dnsd_serves_vms_started_while_it_was_down() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bus = bus(&nats).await;
    // A controller on lab1 that knows web.
    let web = running(1, "web", "lab1", "172.16.0.2");
    let controller = FakeController::start(&nats, "lab1", vec![web.clone()], true).await;

    let mut dnsd = start_binary(&nats, dir.path(), port, "rebuild_interval_secs = 3600");
    // Served from the start-up rebuild, no event needed.
    wait_for_addrs(port, "web.vm", &["172.16.0.2"]).await;

    // dnsd dies; meanwhile web stops and api starts (their events are lost to dnsd).
    dnsd.kill();
    let api = running(2, "api", "lab1", "172.16.0.7");
    publish(&bus, EventKind::Started, 7, &api).await;
    controller.set(vec![api.clone()]);

    let _dnsd = start_binary(&nats, dir.path(), port, "rebuild_interval_secs = 3600");
    wait_for_addrs(port, "api.vm", &["172.16.0.7"]).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for tcp in [false, true] {
        let proto = if tcp { "+tcp" } else { "+notcp" };
        for name in ["api.vm", "api.lab1.vm"] {
            let d = dig(port, &[name, "A", proto]).await;
            assert_eq!(d.addrs(), ["172.16.0.7"], "{name} {proto}: {}", d.raw);
        }
        assert_eq!(dig(port, &["web.vm", "A", proto]).await.status, "NXDOMAIN");
        let (code, data, _) = hickory_query(addr, tcp, "api.lab1.vm.", RecordType::A).await;
        assert_eq!(
            (code, data),
            (ResponseCode::NoError, vec!["172.16.0.7".into()])
        );
    }
}

#[tokio::test]
async fn a_missed_stop_converges_within_one_rebuild_period() {
    let nats = NatsServer::start();
    let web = running(1, "web", "lab1", "172.16.0.2");
    let controller = FakeController::start(&nats, "lab1", vec![web], true).await;
    let dnsd = InProcess::start(&nats, "rebuild_interval_secs = 1").await;
    wait_for_addrs(dnsd.port(), "web.vm", &["172.16.0.2"]).await;
    // The VM stops but its `stopped` event never reaches dnsd.
    controller.set(vec![]);
    wait_for_nxdomain(dnsd.port(), "web.vm").await;
    dnsd.stop().await.unwrap();
}

#[tokio::test]
async fn a_host_that_does_not_answer_vm_list_keeps_its_records() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    // lab1 answers vm.list; lab2's controller is registered but never answers it.
    let lab1 = FakeController::start(
        &nats,
        "lab1",
        vec![running(1, "web", "lab1", "172.16.0.2")],
        true,
    )
    .await;
    let _lab2 = FakeController::start(&nats, "lab2", vec![], false).await;
    let dnsd = InProcess::start(&nats, "rebuild_interval_secs = 1\ngather_timeout_ms = 300").await;
    let port = dnsd.port();
    wait_for_addrs(port, "web.vm", &["172.16.0.2"]).await;
    publish(
        &bus,
        EventKind::Started,
        1,
        &running(2, "db", "lab2", "172.16.1.2"),
    )
    .await;
    wait_for_addrs(port, "db.lab2.vm", &["172.16.1.2"]).await;

    // lab1's VM goes away without an event: the next rebuild removes it...
    lab1.set(vec![]);
    wait_for_nxdomain(port, "web.vm").await;
    // ...and two more complete rebuilds later, lab2's VM (whose host stays silent) is still
    // served.
    let status = || async {
        bus.call::<dns::Status>(&Lab, &DnsStatusRequest {}, Duration::from_secs(5))
            .await
            .unwrap()
    };
    let seen = status().await.last_rebuild_ms.unwrap();
    wait_until("two more rebuilds", Duration::from_secs(20), || async {
        status().await.last_rebuild_ms.unwrap() > seen + 1000
    })
    .await;
    assert_eq!(dig(port, &["db.vm", "A"]).await.addrs(), ["172.16.1.2"]);
    assert_eq!(status().await.records, 2);
    dnsd.stop().await.unwrap();
}
