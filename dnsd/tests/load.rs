//! Updates never block queries: while 300 lifecycle events arrive and the zone is
//! rebuilt from a changing `vm.list` every second, clients querying without pause over UDP and
//! TCP get every answer, always the right one, and keep getting answers throughout.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use banger_proto::dns::DnsStatusRequest;
use banger_proto::event::EventKind;
use banger_proto::op::{Lab, dns};
use banger_proto::vm::{VmInfo, VmState};
use banger_testkit::{NatsServer, wait_until};
use common::*;

/// VMs that stay up on lab1 the whole time: what the clients query.
const STABLE: u32 = 200;
/// VMs on lab2 that start (and half of them stop) while the clients query.
const CHURN: u32 = 200;
/// Extra lab1 VMs that come and go between rebuilds.
const FLAPPING: u32 = 100;
/// Concurrent query loops.
const CLIENTS: u32 = 4;
/// Generous: a reply this late means the server was stuck, not slow.
const REPLY_WAIT: Duration = Duration::from_secs(5);

fn ip(n: u32) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

fn stable() -> Vec<VmInfo> {
    (1..=STABLE)
        .map(|n| running(n, &format!("s-{n}"), "lab1", &ip(n)))
        .collect()
}

#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
}

/// Queries `s-<n>.vm` (and every fourth time `s-<n>.lab1.vm` over TCP) in a loop until `stop`,
/// checking each answer's code and address.
async fn query_loop(addr: SocketAddr, client: u32, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut k = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let n = (client * 131 + k * 17) % STABLE + 1;
        let tcp = k % 4 == 3;
        let name = if tcp {
            format!("s-{n}.lab1.vm")
        } else {
            format!("s-{n}.vm")
        };
        let id = u16::try_from(k & 0xffff).unwrap();
        let q = query_packet(id, &name, 1, 1, 0);
        let reply = if tcp {
            raw_tcp(addr, &q, REPLY_WAIT).await
        } else {
            raw_udp(addr, &q, REPLY_WAIT).await
        };
        match reply {
            None => {
                tally.lost.fetch_add(1, Ordering::Relaxed);
            }
            Some(r) => {
                let m = decode(&r);
                let ok = rcode(&r) == NOERROR
                    && m.answers.len() == 1
                    && m.answers[0].data.to_string() == ip(n);
                let counter = if ok { &tally.answered } else { &tally.wrong };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        k = k.wrapping_add(1);
    }
}

#[tokio::test]
async fn queries_keep_being_answered_while_events_and_rebuilds_churn_the_zone() {
    let nats = NatsServer::start();
    let controller = FakeController::start(&nats, "lab1", stable(), true).await;
    let dnsd = InProcess::start(&nats, "rebuild_interval_secs = 1\nttl_secs = 1").await;
    let bus = bus(&nats).await;
    let status = || async {
        bus.call::<dns::Status>(&Lab, &DnsStatusRequest {}, Duration::from_secs(5))
            .await
            .unwrap()
    };
    wait_until(
        "the stable fleet to be served",
        Duration::from_secs(30),
        || async { status().await.records == 2 * STABLE },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(query_loop(dnsd.addr, c, stop.clone(), tally.clone())))
        .collect();
    wait_until(
        "the clients to get answers",
        Duration::from_secs(20),
        || async { tally.answered.load(Ordering::Relaxed) > 0 },
    )
    .await;

    // The churn: 200 starts and 100 stops on lab2, while lab1's list flaps between rebuilds.
    let before_churn = tally.answered.load(Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    let mut seq = 0;
    for i in 0..CHURN {
        let n = 10_001 + i;
        let vm = running(n, &format!("c-{i}"), "lab2", &ip(n));
        seq += 1;
        publish(&bus, EventKind::Started, seq, &vm).await;
        if i % 2 == 1 {
            let mut stopped = vm;
            stopped.state = VmState::Stopped;
            seq += 1;
            publish(&bus, EventKind::Stopped, seq, &stopped).await;
        }
        if i % 40 == 0 {
            let mut list = stable();
            if i % 80 == 0 {
                list.extend((0..FLAPPING).map(|f| {
                    let n = 20_001 + f;
                    running(n, &format!("f-{f}"), "lab1", &ip(n))
                }));
            }
            controller.set(list);
        }
    }
    controller.set(stable());
    let published = t0.elapsed();
    let first_rebuild = status().await.last_rebuild_ms.unwrap();
    let want = 2 * (STABLE + CHURN / 2);
    wait_until(
        "every event applied and two rebuilds of the final list",
        Duration::from_secs(60),
        || async {
            let s = status().await;
            s.records == want && s.last_rebuild_ms.unwrap() > first_rebuild + 1000
        },
    )
    .await;
    let during_churn = tally.answered.load(Ordering::Relaxed) - before_churn;

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (answered, wrong, lost) = (
        tally.answered.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
    );
    println!(
        "answered {answered} queries ({during_churn} during the churn), {wrong} wrong, {lost} \
         lost; events published in {published:?}, converged after {:?}",
        t0.elapsed()
    );
    assert_eq!((wrong, lost), (0, 0), "every query answered, correctly");
    assert!(during_churn > 0, "queries were answered during the churn");

    // And the churn itself landed: started-only VMs resolve, stopped ones do not.
    wait_for_addrs(dnsd.port(), "c-0.lab2.vm", &[&ip(10_001)]).await;
    assert_eq!(dig(dnsd.port(), &["c-1.vm", "A"]).await.status, "NXDOMAIN");
    assert_eq!(dig(dnsd.port(), &["f-0.vm", "A"]).await.status, "NXDOMAIN");
    dnsd.stop().await.unwrap();
}
