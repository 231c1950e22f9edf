//! dnsd follows lifecycle events: a `started` VM resolves as `<name>.vm` and `<name>.<host>.vm`
//! over UDP and TCP (dig and hickory's client), `stopped` / `deleted` / `failed` remove it, and
//! the bus operations report what is served.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::time::Duration;

use banger_proto::dns::{
    DnsStatus, DnsStatusRequest, LookupReply, LookupRequest, RecordsReply, RecordsRequest,
};
use banger_proto::event::EventKind;
use banger_proto::op::{Lab, dns};
use banger_proto::vm::VmState;
use banger_proto::{ErrorCode, service};
use banger_testkit::{NatsServer, free_port, wait_until};
use common::*;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;

#[tokio::test]
async fn a_started_vm_resolves_over_udp_and_tcp_and_stopped_makes_it_nxdomain() {
    let nats = NatsServer::start();
    let dnsd = InProcess::start(&nats, "ttl_secs = 3").await;
    let bus = bus(&nats).await;
    let port = dnsd.port();
    let web = running(1, "web", "lab1", "172.16.0.2");

    publish(&bus, EventKind::Started, 1, &web).await;
    wait_for_addrs(port, "web.vm", &["172.16.0.2"]).await;

    for tcp in [false, true] {
        let proto = if tcp { "+tcp" } else { "+notcp" };
        for name in ["web.vm", "web.lab1.vm", "WEB.Lab1.VM."] {
            let d = dig(port, &[name, "A", proto]).await;
            assert_eq!(d.status, "NOERROR", "{name} {proto}: {}", d.raw);
            assert!(
                d.flags.contains(&"aa".to_owned()),
                "authoritative: {}",
                d.raw
            );
            assert_eq!(d.addrs(), ["172.16.0.2"], "{name} {proto}: {}", d.raw);
            assert!(d.answers[0].contains(" A 172.16.0.2"), "{}", d.raw);
        }
        let (code, data, _) = hickory_query(dnsd.addr, tcp, "web.lab1.vm.", RecordType::A).await;
        assert_eq!(
            (code, data),
            (ResponseCode::NoError, vec!["172.16.0.2".into()])
        );
    }
    // The configured TTL is served.
    let d = dig(port, &["web.vm", "A"]).await;
    assert!(
        d.raw.lines().any(|l| l
            .split_whitespace()
            .eq(["web.vm.", "3", "IN", "A", "172.16.0.2"])),
        "{}",
        d.raw
    );

    let mut stopped = web.clone();
    stopped.state = VmState::Stopped;
    publish(&bus, EventKind::Stopped, 2, &stopped).await;
    wait_for_nxdomain(port, "web.vm").await;
    for tcp in [false, true] {
        let proto = if tcp { "+tcp" } else { "+notcp" };
        for name in ["web.vm", "web.lab1.vm"] {
            let d = dig(port, &[name, "A", proto]).await;
            assert_eq!(d.status, "NXDOMAIN", "{name} {proto}: {}", d.raw);
            assert!(d.answers.is_empty());
            assert!(d.authority_has_soa(), "NXDOMAIN carries the SOA: {}", d.raw);
        }
        let (code, data, authorities) =
            hickory_query(dnsd.addr, tcp, "web.vm.", RecordType::A).await;
        assert_eq!(code, ResponseCode::NXDomain);
        assert!(data.is_empty());
        assert_eq!(authorities, 1, "the SOA");
    }
    dnsd.stop().await.unwrap();
}

#[tokio::test]
async fn deleted_and_failed_remove_records_but_failed_while_running_keeps_them() {
    let nats = NatsServer::start();
    let dnsd = InProcess::start(&nats, "").await;
    let bus = bus(&nats).await;
    let port = dnsd.port();
    let a = running(1, "alpha", "lab1", "172.16.0.2");
    let b = running(2, "beta", "lab1", "172.16.0.3");
    let c = running(3, "gamma", "lab2", "fd00::3");
    publish(&bus, EventKind::Started, 1, &a).await;
    publish(&bus, EventKind::Started, 2, &b).await;
    publish(&bus, EventKind::Started, 1, &c).await;
    wait_for_addrs(port, "beta.vm", &["172.16.0.3"]).await;
    let d = dig(port, &["gamma.lab2.vm", "AAAA"]).await;
    assert_eq!(d.addrs(), ["fd00::3"], "{}", d.raw);
    // An IPv6-only VM has no A record: NOERROR, no data, SOA in authority.
    let d = dig(port, &["gamma.vm", "A"]).await;
    assert_eq!(
        (d.status.as_str(), d.answers.len()),
        ("NOERROR", 0),
        "{}",
        d.raw
    );
    assert!(d.authority_has_soa(), "{}", d.raw);

    // `failed` while still running (e.g. a failed restart step that left it up): kept.
    publish(&bus, EventKind::Failed, 3, &a).await;
    let mut b_failed = b.clone();
    b_failed.state = VmState::Failed;
    publish(&bus, EventKind::Failed, 4, &b_failed).await;
    wait_for_nxdomain(port, "beta.vm").await;
    assert_eq!(dig(port, &["alpha.vm", "A"]).await.addrs(), ["172.16.0.2"]);

    let mut a_deleted = a.clone();
    a_deleted.state = VmState::Deleting;
    a_deleted.network = None;
    publish(&bus, EventKind::Deleted, 5, &a_deleted).await;
    wait_for_nxdomain(port, "alpha.lab1.vm").await;
    assert_eq!(dig(port, &["alpha.vm", "A"]).await.status, "NXDOMAIN");
    // The host label of a host with VMs is an empty non-terminal: NOERROR without data.
    let d = dig(port, &["lab2.vm", "A"]).await;
    assert_eq!(
        (d.status.as_str(), d.answers.len()),
        ("NOERROR", 0),
        "{}",
        d.raw
    );
    dnsd.stop().await.unwrap();
}

#[tokio::test]
async fn bus_operations_report_records_lookups_and_status() {
    let nats = NatsServer::start();
    let dnsd = InProcess::start(&nats, "").await;
    let bus = bus(&nats).await;
    let web = running(1, "web", "lab1", "172.16.0.2");
    publish(&bus, EventKind::Started, 1, &web).await;
    wait_for_addrs(dnsd.port(), "web.vm", &["172.16.0.2"]).await;

    let t = Duration::from_secs(5);
    let recs: RecordsReply = bus
        .call::<dns::Records>(&Lab, &RecordsRequest {}, t)
        .await
        .unwrap();
    let names: Vec<&str> = recs.records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["web.lab1.vm.", "web.vm."]);
    assert!(
        recs.records
            .iter()
            .all(|r| r.vm_id == web.id && r.rtype == "A")
    );

    let found: LookupReply = bus
        .call::<dns::Lookup>(
            &Lab,
            &LookupRequest {
                name: "web.lab1".into(),
            },
            t,
        )
        .await
        .unwrap();
    assert_eq!(found.name, "web.lab1.vm.");
    assert_eq!(found.records.len(), 1);
    let bad = bus
        .call::<dns::Lookup>(
            &Lab,
            &LookupRequest {
                name: "no such!".into(),
            },
            t,
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), ErrorCode::InvalidArgument, "{bad}");

    let status: DnsStatus = bus
        .call::<dns::Status>(&Lab, &DnsStatusRequest {}, t)
        .await
        .unwrap();
    assert_eq!(status.listeners, [dnsd.addr.to_string()]);
    assert_eq!((status.zone.as_str(), status.records), ("vm.", 2));
    assert!(status.last_rebuild_ms.is_some(), "the start-up rebuild ran");

    let found = bus
        .ping(Some(service::DNSD), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].metadata.get(service::META_DNS_LISTEN),
        Some(&dnsd.addr.to_string())
    );
    dnsd.stop().await.unwrap();
}

#[tokio::test]
async fn every_configured_listener_answers_on_udp_and_tcp() {
    let nats = NatsServer::start();
    let addrs = [
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    ];
    let dnsd = InProcess::start_on(&nats, "", &addrs).await;
    let bus = bus(&nats).await;
    publish(
        &bus,
        EventKind::Started,
        1,
        &running(1, "web", "lab1", "172.16.0.2"),
    )
    .await;
    for a in addrs {
        wait_until(
            "each listener to serve web.vm",
            Duration::from_secs(20),
            || async {
                dig(a.port(), &["web.vm", "A", "+tcp"]).await.addrs() == ["172.16.0.2"]
                    && dig(a.port(), &["web.vm", "A"]).await.addrs() == ["172.16.0.2"]
            },
        )
        .await;
    }
    dnsd.stop().await.unwrap();
}

#[tokio::test]
async fn a_taken_port_is_a_start_up_error() {
    let nats = NatsServer::start();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let common = banger_bus::config::CommonArgs {
        config: Some(config_file(dir.path(), "")),
        nats_urls: vec![nats.url()],
        host_id: Some(DNSD_HOST.into()),
        ..Default::default()
    };
    let config = banger_bus::config::CommonConfig::resolve(&common, "dnsd").unwrap();
    let ctx = banger_bus::runtime::Context::connect(config).await.unwrap();
    let args = banger_dnsd::Args {
        listen: vec![addr],
        common,
    };
    let err = banger_dnsd::run(ctx, args, banger_bus::shutdown::CancellationToken::new())
        .await
        .unwrap_err();
    let msg = banger_bus::runtime::chain(&err);
    assert!(msg.contains(&addr.to_string()), "{msg}");
}
