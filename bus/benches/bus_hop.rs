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

use std::time::Duration;

use banger_testkit::NatsServer;
use banger_testkit::bus_hop::{self as hop, ROUNDS, WARMUP};

/// The `pct`th percentile (0..=100) of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let idx = (sorted.len().saturating_sub(1) * pct).div_ceil(100);
    sorted[idx.min(sorted.len() - 1)]
}

fn p50_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 50), percentile(&samples, 99))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let nats = NatsServer::start();
    let samples = hop::measure_hops(&nats.url(), WARMUP, ROUNDS)
        .await
        .unwrap();
    let (ours50, ours99) = p50_p99(samples.ours);
    let (bare50, bare99) = p50_p99(samples.bare);

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
}
