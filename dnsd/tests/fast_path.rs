//! The UDP fast path answers exactly as hickory does: every query is asked over UDP (answered
//! from the pre-encoded records, or relayed to hickory) and over TCP (always hickory), with the
//! real `dig`, and the two answers must say the same thing: status, flags, question, answer,
//! authority and the EDNS pseudo-section. Covers A, AAAA, NODATA both ways, an empty
//! non-terminal, two VMs at one name, mixed case, EDNS with and without DNSSEC OK, CD, no RD,
//! NXDOMAIN and names outside the zone; a zone change is visible to the next UDP query.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::time::Duration;

use banger_proto::event::EventKind;
use banger_proto::vm::VmState;
use banger_testkit::{NatsServer, wait_until};
use common::*;

/// `dig` with every section but the statistics, over UDP or TCP, with the message id blanked.
async fn dig_full(port: u16, tcp: bool, args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args([
            "+tries=1",
            "+time=2",
            "+noall",
            "+comments",
            "+question",
            "+answer",
            "+authority",
            "+additional",
            if tcp { "+tcp" } else { "+notcp" },
        ])
        .args(args)
        .output()
        .await
        .expect("running dig (bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("status: "),
        "dig {args:?} got no answer: {text}"
    );
    text.lines()
        .map(|l| match l.find(", id: ") {
            Some(i) => l[..i].to_owned(),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn udp_answers_mean_what_hickory_answers_over_tcp() {
    let nats = NatsServer::start();
    let dnsd = InProcess::start(&nats, "ttl_secs = 3\nnegative_ttl_secs = 4").await;
    let bus = bus(&nats).await;
    let port = dnsd.port();
    let vms = [
        running(1, "web", "lab1", "172.16.0.2"),
        running(2, "six", "lab1", "fd00::5"),
        running(3, "dup", "lab1", "172.16.0.3"),
        running(4, "dup", "lab2", "172.16.0.4"),
    ];
    for (i, vm) in vms.iter().enumerate() {
        publish(&bus, EventKind::Started, i as u64 + 1, vm).await;
    }
    wait_for_addrs(port, "dup.vm", &["172.16.0.3", "172.16.0.4"]).await;
    wait_for_addrs(port, "six.vm", &[]).await;

    let names = [
        "web.vm",
        "WeB.LaB1.Vm.",
        "six.vm",
        "SIX.lab1.vm",
        "dup.vm",
        "lab1.vm",
        "nope.vm",
        "web.nope.vm",
        "vm",
        "example.com",
    ];
    let variants: [&[&str]; 6] = [
        &["+noedns"],
        &["+edns=0", "+nocookie"],
        &["+edns=0", "+bufsize=4096"],
        &["+dnssec"],
        &["+cd", "+norec"],
        &["+edns=0", "+nsid"],
    ];
    let mut compared = 0;
    for name in names {
        for rtype in ["A", "AAAA"] {
            for extra in variants {
                let mut args = vec![name, rtype];
                args.extend_from_slice(extra);
                let udp = dig_full(port, false, &args).await;
                let tcp = dig_full(port, true, &args).await;
                assert_eq!(
                    udp.to_lowercase(),
                    tcp.to_lowercase(),
                    "dig {args:?}: UDP and TCP answers differ"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, names.len() * 2 * variants.len());

    // Spot checks that the comparison saw real answers, not two identical failures.
    let a = dig(port, &["WeB.LaB1.Vm.", "A"]).await;
    assert_eq!(
        (a.status.as_str(), a.addrs()),
        ("NOERROR", vec!["172.16.0.2".to_owned()])
    );
    let nodata = dig(port, &["web.vm", "AAAA"]).await;
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.raw);
    assert!(
        nodata.answers.is_empty() && nodata.authority_has_soa(),
        "{}",
        nodata.raw
    );
    let six = dig(port, &["six.vm", "AAAA"]).await;
    assert_eq!(six.answers, ["six.vm. AAAA fd00::5"], "{}", six.raw);
    let dup = dig(port, &["dup.vm", "A", "+edns=0"]).await;
    assert_eq!(dup.addrs(), ["172.16.0.3", "172.16.0.4"], "{}", dup.raw);
    assert_eq!(dig(port, &["nope.vm", "A"]).await.status, "NXDOMAIN");
    assert_eq!(dig(port, &["example.com", "A"]).await.status, "REFUSED");
}

#[tokio::test]
async fn a_zone_change_is_answered_by_the_next_udp_query() {
    let nats = NatsServer::start();
    let dnsd = InProcess::start(&nats, "").await;
    let bus = bus(&nats).await;
    let port = dnsd.port();
    let mut web = running(1, "web", "lab1", "172.16.0.2");
    publish(&bus, EventKind::Started, 1, &web).await;
    // TCP goes to hickory, which reads the same snapshot: once it answers, UDP must too.
    wait_until("web.vm over TCP", Duration::from_secs(20), || async {
        dig(port, &["web.vm", "A", "+tcp"]).await.addrs() == ["172.16.0.2"]
    })
    .await;
    assert_eq!(dig(port, &["web.vm", "A"]).await.addrs(), ["172.16.0.2"]);

    web.state = VmState::Stopped;
    publish(&bus, EventKind::Stopped, 2, &web).await;
    wait_until("web.vm gone over TCP", Duration::from_secs(20), || async {
        dig(port, &["web.vm", "A", "+tcp"]).await.status == "NXDOMAIN"
    })
    .await;
    let udp = dig(port, &["web.vm", "A"]).await;
    assert_eq!(udp.status, "NXDOMAIN", "{}", udp.raw);
    assert!(udp.authority_has_soa(), "{}", udp.raw);
}

/// The UDP port is dnsd's alone: a socket of the same user (root here) that sets
/// `SO_REUSEPORT` cannot join it, neither by naming the port nor by being handed it as an
/// ephemeral one (the way a root `dig` once shared it and read its own query back).
#[tokio::test]
async fn no_other_socket_can_join_the_udp_port() {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd as _;

    let nats = NatsServer::start();
    let dnsd = InProcess::start(&nats, "").await;
    let port = dnsd.port();
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
    let err = bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port))
        .expect_err("a SO_REUSEPORT socket joined dnsd's UDP port");
    assert_eq!(err, nix::errno::Errno::EADDRINUSE);
    // And the port still answers.
    assert_eq!(dig(port, &["nope.vm", "A"]).await.status, "NXDOMAIN");
}

/// The fast path reads queued datagrams in batches: a burst of 120 queries sent back to back —
/// mixed-case names, NODATA, EDNS, NXDOMAIN and REFUSED (relayed to hickory) and garbage —
/// gets every answer, each with its own id, its question echoed byte for byte and the right
/// records, and the server keeps answering.
#[tokio::test]
async fn a_burst_of_mixed_queries_gets_every_answer_right() {
    use hickory_server::proto::op::ResponseCode;
    use rand::{Rng as _, SeedableRng as _};

    let nats = NatsServer::start();
    let dnsd = InProcess::start(&nats, "").await;
    let bus = bus(&nats).await;
    let port = dnsd.port();
    publish(
        &bus,
        EventKind::Started,
        1,
        &running(1, "web", "lab1", "172.16.0.2"),
    )
    .await;
    publish(
        &bus,
        EventKind::Started,
        2,
        &running(2, "six", "lab1", "fd00::5"),
    )
    .await;
    wait_for_addrs(port, "web.vm", &["172.16.0.2"]).await;
    wait_for_addrs(port, "six.vm", &[]).await;

    let with_edns = |mut q: Vec<u8>| {
        q[11] = 1; // ARCOUNT
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]); // OPT, 1232 bytes
        q
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", port)).await.unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for k in 0..120u16 {
        let (packet, want) = match k % 6 {
            0 => {
                let name = if k.is_multiple_of(12) {
                    "WeB.vm"
                } else {
                    "wEb.LaB1.VM"
                };
                (
                    query_packet(k, name, 1, 1, 0),
                    Some((ResponseCode::NoError, "172.16.0.2", false)),
                )
            }
            1 => (
                query_packet(k, "web.LAB1.vm", 28, 1, 0),
                Some((ResponseCode::NoError, "", false)),
            ),
            2 => (
                with_edns(query_packet(k, "SIX.vm", 28, 1, 0)),
                Some((ResponseCode::NoError, "fd00::5", true)),
            ),
            3 => (
                query_packet(k, "nope.vm", 1, 1, 0),
                Some((ResponseCode::NXDomain, "", false)),
            ),
            4 => {
                let mut junk = vec![0u8; rng.random_range(1..40)];
                rng.fill(&mut junk[..]);
                (junk, None)
            }
            _ => (
                query_packet(k, "example.com", 1, 1, 0),
                Some((ResponseCode::Refused, "", false)),
            ),
        };
        sock.send(&packet).await.unwrap();
        if let Some(want) = want {
            expected.insert(k, (packet, want));
        }
    }

    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !expected.is_empty() {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no answer to ids {:?}", expected.keys()))
            .unwrap();
        let reply = &buf[..n];
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        // A reply to a garbage datagram (FORMERR, when hickory could read an id) is not checked.
        let Some((query, (rcode, addr, edns))) = expected.remove(&id) else {
            continue;
        };
        let question_end = query.len() - if edns { 11 } else { 0 };
        assert_eq!(
            reply[12..question_end],
            query[12..question_end],
            "id {id}: question"
        );
        let m = decode(reply);
        assert_eq!(m.metadata.response_code, rcode, "id {id}: {m:?}");
        let data: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        let want: Vec<&str> = [addr].into_iter().filter(|a| !a.is_empty()).collect();
        assert_eq!(data, want, "id {id}: {m:?}");
        if rcode != ResponseCode::Refused {
            assert!(m.metadata.authoritative, "id {id}: {m:?}");
        }
        if rcode == ResponseCode::NoError && addr.is_empty() || rcode == ResponseCode::NXDomain {
            assert_eq!(m.authorities.len(), 1, "id {id}: SOA expected: {m:?}");
        }
        assert_eq!(m.edns.is_some(), edns, "id {id}: {m:?}");
    }
    assert_eq!(dig(port, &["web.vm", "A"]).await.addrs(), ["172.16.0.2"]);
}
