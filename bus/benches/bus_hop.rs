//! Bus overhead: one request/reply hop through banger's service runtime (typed request,
//! trace-context headers, service-API endpoint, JSON reply) against a bare async-nats
//! request/reply to a bare subscriber, in the same run, on the same nats-server.
//!
//! `cargo bench -p banger-bus --bench bus_hop` prints one row per path: p50, p99, and the
//! ratio of ours to the bare reference.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::tests_outside_test_module,
    reason = "a benchmark binary: a failure aborts the run"
)]

use std::time::{Duration, Instant};

use banger_bus::Bus;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::{HostId, Subjects};
use banger_testkit::NatsServer;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

const WARMUP: usize = 200;
const ROUNDS: usize = 3_000;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
struct Echo {
    name: String,
    n: u64,
}

/// The `pct`th percentile (0..=100) of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let idx = (sorted.len().saturating_sub(1) * pct).div_ceil(100);
    sorted[idx.min(sorted.len() - 1)]
}

async fn measure<F, Fut>(mut call: F) -> (Duration, Duration)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..WARMUP {
        call(i as u64).await;
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let t = Instant::now();
        call(i as u64).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    (percentile(&samples, 50), percentile(&samples, 99))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let nats = NatsServer::start();
    let server_client = async_nats::connect(nats.url()).await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();

    // Ours: a typed endpoint on the service runtime, called through Bus::request.
    let host = HostId::new("bench").unwrap();
    let server_bus = Bus::new(server_client.clone(), Subjects::default());
    let mut service = ServiceHost::start(&server_bus, ServiceSpec::new("bench", "echo", &host))
        .await
        .unwrap();
    service
        .endpoint("echo", "bench.ours".to_owned(), |req: Echo| async move {
            Ok(req)
        })
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run(shutdown.clone()));

    // Reference: a bare subscriber answering the same JSON body.
    let mut sub = server_client.subscribe("bench.bare").await.unwrap();
    let responder = server_client.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, msg.payload).await;
            }
        }
    });
    server_client.flush().await.unwrap();

    let bus = Bus::new(client.clone(), Subjects::default());
    let (ours50, ours99) = measure(|n| {
        let bus = &bus;
        async move {
            let req = Echo {
                name: "web".into(),
                n,
            };
            let _: Echo = bus
                .request("bench.ours".to_owned(), &req, TIMEOUT)
                .await
                .unwrap();
        }
    })
    .await;
    let (bare50, bare99) = measure(|n| {
        let client = &client;
        async move {
            let body = serde_json::to_vec(&Echo {
                name: "web".into(),
                n,
            })
            .unwrap();
            let reply = client.request("bench.bare", body.into()).await.unwrap();
            let _: Echo = serde_json::from_slice(&reply.payload).unwrap();
        }
    })
    .await;

    println!("bus request/reply hop, {ROUNDS} sequential requests after {WARMUP} warm-up");
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10}",
        "path", "p50 µs", "p99 µs", "ref p50", "ratio"
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.2}",
        "service runtime (ours)",
        us(ours50),
        us(ours99),
        us(bare50),
        us(ours50) / us(bare50)
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.2}",
        "bare async-nats (reference)",
        us(bare50),
        us(bare99),
        us(bare50),
        1.0
    );
    shutdown.cancel();
    let _ = running.await;
}
