//! dnsd under load: queries per second and latency while serving 1,000 and 10,000 VMs, the
//! time to load them from `vm.list`, and the delay from a `started` event to its record being
//! served. Load comes from `dnsperf` when it is installed and from a small built-in UDP load
//! generator always (which also gives percentiles). When Knot DNS (`knotd`) is installed, the
//! same zone is served by it in the same run as a reference row. The measuring part lives in
//! `banger_testkit::dns_load`, which the `banger-bench` harness runs too.
//!
//! Run: `cargo bench -p banger-dnsd --bench dns_serve` (needs nats-server; dnsperf and knot are
//! optional: `apt-get install dnsperf knot`). Numbers depend on the machine; this prints them, it
//! asserts nothing.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::tests_outside_test_module,
    reason = "a benchmark program: a panic is a failed run, printing is its job"
)]

use std::time::Duration;

use banger_testkit::dns_load::{self as load, BUILTIN_CLIENTS, LOAD_SECS, Load};
use banger_testkit::have_program;

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or_default()
}

fn load_line(server: &str, records: usize, l: &Load) -> String {
    let dp = l.dnsperf.as_ref();
    format!(
        "| {server} | {records} | {} | {} | {} | {:.0} | {:.3} | {:.3} |",
        dp.map_or_else(|| "-".to_owned(), |d| format!("{:.0}", d.qps)),
        dp.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.3}", d.avg.as_secs_f64() * 1000.0)
        ),
        dp.map_or("-", |d| d.lost.as_str()),
        l.builtin_qps,
        pct(&l.latencies, 0.5).as_secs_f64() * 1000.0,
        pct(&l.latencies, 0.99).as_secs_f64() * 1000.0,
    )
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for n in [1_000usize, 10_000] {
        results.push(load::measure_size(dir.path(), n).await);
    }

    println!();
    println!(
        "dnsd bench: {LOAD_SECS} s per run, localhost UDP; dnsperf -c 8 -q 200 over both name forms; \
         built-in: {BUILTIN_CLIENTS} clients, one query in flight each"
    );
    if !have_program("dnsperf") {
        println!("dnsperf not installed: dnsperf columns empty (apt-get install dnsperf)");
    }
    if !have_program("knotd") {
        println!("knotd not installed: no reference row (apt-get install knot)");
    }
    println!();
    println!(
        "| server | records | dnsperf qps | dnsperf avg ms | dnsperf lost | built-in qps | p50 ms | p99 ms |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    for r in &results {
        println!("{}", load_line("banger-dnsd", 2 * r.vms, &r.dnsd));
        if let Some(k) = &r.knot {
            println!("{}", load_line("knotd (reference)", 2 * r.vms, k));
        }
    }
    println!();
    println!(
        "| VMs | load from vm.list (start to all served) ms | started event -> served: p50 ms | p99 ms | max ms |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for r in &results {
        let ev = &r.events;
        println!(
            "| {} | {} | {} | {} | {} |",
            r.vms,
            ms(r.load_time),
            ms(pct(ev, 0.5)),
            ms(pct(ev, 0.99)),
            ms(ev.last().copied().unwrap_or_default())
        );
    }
}
