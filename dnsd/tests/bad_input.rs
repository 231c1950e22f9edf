//! Bad input never crashes dnsd and gets the DNS error codes a resolver expects: FORMERR for
//! malformed and oversized messages (silence when not even a header arrived), NOTIMP for
//! unsupported opcodes and updates, REFUSED outside the zone, for other classes and for zone
//! transfers, NOERROR without data for unknown types on existing names. After every bad packet
//! the server still answers a good query, on UDP and TCP.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use banger_proto::event::EventKind;
use banger_testkit::NatsServer;
use common::*;
use hickory_server::proto::rr::RecordType;
use rand::{Rng, SeedableRng};

const WAIT: Duration = Duration::from_secs(2);
/// How long to listen for a reply that should not come.
const SILENCE: Duration = Duration::from_millis(300);

async fn started(nats: &NatsServer) -> InProcess {
    let dnsd = InProcess::start(nats, "").await;
    let bus = bus(nats).await;
    publish(
        &bus,
        EventKind::Started,
        1,
        &running(1, "web", "lab1", "172.16.0.2"),
    )
    .await;
    wait_for_addrs(dnsd.port(), "web.vm", &["172.16.0.2"]).await;
    dnsd
}

/// A good query still gets its answer, on UDP and on TCP.
async fn still_answers(addr: SocketAddr, after: &str) {
    let q = query_packet(0x5151, "web.vm", 1, 1, 0);
    let udp = raw_udp(addr, &q, WAIT)
        .await
        .unwrap_or_else(|| panic!("no UDP answer after {after}"));
    let tcp = raw_tcp(addr, &q, WAIT)
        .await
        .unwrap_or_else(|| panic!("no TCP answer after {after}"));
    for r in [udp, tcp] {
        assert_eq!(rcode(&r), NOERROR, "after {after}");
        assert_eq!(decode(&r).answers.len(), 1, "after {after}");
    }
}

/// Sends `packet` on UDP and TCP, returning both replies.
async fn both(addr: SocketAddr, packet: &[u8]) -> [Option<Vec<u8>>; 2] {
    [
        raw_udp(addr, packet, WAIT).await,
        raw_tcp(addr, packet, WAIT).await,
    ]
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_silence_and_the_server_keeps_answering() {
    let nats = NatsServer::start();
    let dnsd = started(&nats).await;
    let addr = dnsd.addr;

    // Shorter than a header: nothing can be answered (there is no id to answer to).
    for short in [&[][..], &[0x12][..], &[0x12, 0x34, 0x01, 0x00, 0x00][..]] {
        assert_eq!(raw_udp(addr, short, SILENCE).await, None);
        assert_eq!(raw_tcp(addr, short, SILENCE).await, None);
        still_answers(addr, "a truncated header").await;
    }

    // A header announcing a question that is not there.
    let mut header_only = query_packet(0x0a0b, "web.vm", 1, 1, 0);
    header_only.truncate(12);
    for reply in both(addr, &header_only).await {
        let r = reply.expect("a FORMERR reply");
        assert_eq!(&r[..2], &[0x0a, 0x0b], "the reply carries the query id");
        assert_eq!(rcode(&r), FORMERR);
    }
    // A question cut off in the middle of its name.
    let cut = &query_packet(0x0a0c, "web.vm", 1, 1, 0)[..16];
    for reply in both(addr, cut).await {
        assert_eq!(rcode(&reply.expect("a FORMERR reply")), FORMERR);
    }
    // A label pointer to itself (a compression loop).
    let mut looped = query_packet(0x0a0d, "web.vm", 1, 1, 0);
    looped.truncate(12);
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    for reply in both(addr, &looped).await {
        assert_eq!(rcode(&reply.expect("a FORMERR reply")), FORMERR);
    }
    still_answers(addr, "malformed questions").await;

    // Random garbage: whatever comes back is a well-formed response to that id, and the server
    // survives all of it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6261_6e67);
    for i in 0..200 {
        let len = rng.random_range(12..600);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        junk[2] &= 0x7f; // a query, not a response (responses are dropped unanswered)
        let reply = if i % 4 == 0 {
            raw_tcp(addr, &junk, SILENCE).await
        } else {
            raw_udp(addr, &junk, SILENCE).await
        };
        if let Some(r) = reply {
            assert!(r.len() >= 12, "a reply has a header");
            assert_eq!(&r[..2], &junk[..2], "reply id");
            assert_ne!(r[2] & 0x80, 0, "QR set");
        }
    }
    still_answers(addr, "200 random packets").await;
    dnsd.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_queries_are_rejected_and_the_server_keeps_answering() {
    let nats = NatsServer::start();
    let dnsd = started(&nats).await;
    let addr = dnsd.addr;

    // A name longer than DNS allows (255 octets): FORMERR.
    let long_name = vec!["a".repeat(63); 6].join(".") + ".vm";
    for reply in both(addr, &query_packet(0x0b01, &long_name, 1, 1, 0)).await {
        assert_eq!(rcode(&reply.expect("a FORMERR reply")), FORMERR);
    }
    // A valid query followed by 60 KB of trailing junk, as one datagram and as one TCP message.
    let mut huge = query_packet(0x0b02, "web.vm", 1, 1, 0);
    huge.extend(std::iter::repeat_n(0xab, 60_000));
    let [udp, tcp] = both(addr, &huge).await;
    // Over UDP the datagram is cut to the server's buffer; either way no answer may claim data
    // for bytes it did not parse: a reply is FORMERR or an answer to the real question.
    for r in [udp, tcp].into_iter().flatten() {
        assert!(
            matches!(rcode(&r), FORMERR | NOERROR),
            "rcode {}",
            rcode(&r)
        );
        assert_eq!(&r[..2], &[0x0b, 0x02]);
    }
    // A message of the largest TCP length filled with records it claims to carry.
    let mut max = query_packet(0x0b03, "web.vm", 1, 1, 0);
    max[10..12].copy_from_slice(&u16::MAX.to_be_bytes()); // ARCOUNT = 65535
    max.resize(65_535, 0xff);
    if let Some(r) = raw_tcp(addr, &max, WAIT).await {
        assert_eq!(rcode(&r), FORMERR);
    }
    still_answers(addr, "oversized queries").await;
    dnsd.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_types_opcodes_classes_and_names_get_the_right_codes() {
    let nats = NatsServer::start();
    let dnsd = started(&nats).await;
    let addr = dnsd.addr;
    let port = dnsd.port();

    // An unknown type on an existing name: NOERROR, no answer, the SOA for negative caching.
    for reply in both(addr, &query_packet(0x0c01, "web.vm", 65_280, 1, 0)).await {
        let r = reply.expect("an answer");
        assert_eq!(rcode(&r), NOERROR);
        let m = decode(&r);
        assert!(m.answers.is_empty());
        assert_eq!(
            m.authorities.first().map(|a| a.record_type()),
            Some(RecordType::SOA)
        );
    }
    let d = dig(port, &["web.vm", "TXT"]).await;
    assert_eq!(
        (d.status.as_str(), d.answers.len()),
        ("NOERROR", 0),
        "{}",
        d.raw
    );
    assert!(d.authority_has_soa(), "{}", d.raw);
    // ...and on a missing name: NXDOMAIN.
    let r = raw_udp(addr, &query_packet(0x0c02, "nope.vm", 65_280, 1, 0), WAIT)
        .await
        .unwrap();
    assert_eq!(rcode(&r), NXDOMAIN);

    // The apex: SOA and NS.
    let d = dig(port, &["vm", "SOA"]).await;
    assert!(
        d.answers
            .iter()
            .any(|a| a.starts_with("vm. SOA localhost. nobody.invalid.")),
        "{}",
        d.raw
    );
    let d = dig(port, &["vm", "NS"]).await;
    assert_eq!(d.answers, ["vm. NS localhost."], "{}", d.raw);

    // Names outside the zone: REFUSED, on UDP and TCP.
    for proto in ["+notcp", "+tcp"] {
        let d = dig(port, &["example.com", "A", proto]).await;
        assert_eq!(d.status, "REFUSED", "{}", d.raw);
    }
    // Another class (CHAOS): REFUSED.
    let d = dig(port, &["-c", "CH", "web.vm", "TXT"]).await;
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    // Zone transfers: REFUSED (`dns.records` lists the zone instead).
    let d = dig(port, &["vm", "AXFR"]).await;
    assert!(
        d.raw.contains("Transfer failed") || d.status == "REFUSED",
        "{}",
        d.raw
    );
    let r = raw_tcp(addr, &query_packet(0x0c03, "vm", 252, 1, 0), WAIT)
        .await
        .unwrap();
    assert_eq!(rcode(&r), REFUSED);

    // Opcodes other than QUERY: NOTIMP (STATUS = 2), and dynamic UPDATE (5) too.
    for (id, opcode) in [(0x0c04u16, 2u8), (0x0c05, 1)] {
        let r = raw_udp(addr, &query_packet(id, "web.vm", 1, 1, opcode), WAIT)
            .await
            .unwrap();
        assert_eq!(rcode(&r), NOTIMP, "opcode {opcode}");
    }
    let mut update = query_packet(0x0c06, "vm", 6, 1, 5); // zone section: vm. SOA IN
    update[2] &= !0x01;
    let r = raw_udp(addr, &update, WAIT).await.unwrap();
    assert_eq!(rcode(&r), NOTIMP, "update");

    // Two questions in one query: FORMERR.
    let mut two = query_packet(0x0c07, "web.vm", 1, 1, 0);
    two[5] = 2;
    two.extend_from_slice(&query_packet(0, "web.vm", 1, 1, 0)[12..]);
    let r = raw_udp(addr, &two, WAIT).await.unwrap();
    assert_eq!(rcode(&r), FORMERR);

    // A response sent as a query is dropped, never answered (no reflection).
    let mut response = query_packet(0x0c08, "web.vm", 1, 1, 0);
    response[2] |= 0x80;
    assert_eq!(raw_udp(addr, &response, SILENCE).await, None);

    still_answers(addr, "odd queries").await;
    dnsd.stop().await.unwrap();
}
