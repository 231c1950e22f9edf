//! netd's costs, measured for real as root in a private network namespace (real nats-server,
//! real SQLite, real taps, bridge and nftables):
//!
//! - attach and detach latency (p50/p99) of 1 VM at a time, in-process and over the bus;
//! - attach and detach latency while going to 100 VMs and back (serial detaches);
//! - detaching 50 VMs in one batch (one netdevice-group delete) against 50 serial detaches and
//!   50 concurrent ones (merged by the teardown worker);
//! - a reference row in the same run: `ip tuntap add` + `ip link set master` (and `ip link del`)
//!   per tap through the `ip` command, which is what a shell-script tool would pay.
//!
//! Run: `cargo bench -p banger-netd --bench netd` (as root; needs nats-server and nft). It prints
//! numbers and asserts nothing; without root it says so and exits.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::tests_outside_test_module,
    reason = "a benchmark program: a panic is a failed run, printing is its job"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use banger_bus::Bus;
use banger_netd::config::{NetConfig, NetdFile};
use banger_netd::ops::attach::attach;
use banger_netd::ops::detach::{Teardown, detach, teardown};
use banger_netd::state::Netd;
use banger_proto::net::{AttachRequest, DetachRequest};
use banger_proto::op::net;
use banger_proto::{HostId, Subjects, VmId, VmName};
use banger_testkit::netns::NetNs;
use banger_testkit::{NatsServer, have_program, is_root, skip};

/// Rounds of the one-VM measurement.
const SINGLE_ROUNDS: u32 = 40;
/// The "many VMs" size.
const MANY: u32 = 100;
/// The batch size compared with serial detaches.
const BATCH: u32 = 50;
/// Reference taps made with the `ip` command.
const REFERENCE: u32 = 20;

const BRIDGE: &str = "bbench0";

fn vm(n: u32) -> VmId {
    VmId::new(format!("{n:08x}{}", "b".repeat(24))).unwrap()
}

fn req(n: u32) -> AttachRequest {
    AttachRequest {
        vm_id: vm(n),
        vm_name: VmName::new(format!("vm{n}")).unwrap(),
        port_forwards: vec![],
    }
}

fn detach_req(n: u32, release: bool) -> DetachRequest {
    DetachRequest {
        vm_id: vm(n),
        release,
    }
}

/// Percentiles of a sample, in milliseconds.
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    total: f64,
}

fn stats(mut d: Vec<Duration>) -> Stats {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    // Nearest rank, in integers: index = round((n - 1) * pct / 100).
    let at = |pct: usize| ms(d[((d.len() - 1) * pct + 50) / 100]);
    Stats {
        n: d.len(),
        p50: at(50),
        p99: at(99),
        total: d.iter().copied().map(ms).sum(),
    }
}

fn row(what: &str, s: &Stats) {
    println!(
        "{what:<52} n={:<4} p50 {:>8.2} ms  p99 {:>8.2} ms  total {:>9.1} ms",
        s.n, s.p50, s.p99, s.total
    );
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let v = f.await;
    (v, t.elapsed())
}

fn ip(ns: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn main() {
    if !is_root() {
        skip("needs root (network namespace, taps, nftables)");
        return;
    }
    if !have_program("nats-server") || !have_program("nft") {
        skip("needs nats-server and nft on PATH");
        return;
    }
    let ns = NetNs::create("bench");
    // Started from a thread inside the namespace: the server and its readiness probe live there.
    let nats = ns.run(NatsServer::start);
    let url = nats.url();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_owned();
    let ns_name = ns.name().to_owned();

    println!("netd bench: real taps, bridge, nftables and SQLite in netns {ns_name}");
    // A multi-thread runtime, as `banger-netd` runs on (threads made from inside `ns.run`
    // inherit its namespace): a delete blocks its thread in the kernel for a grace period while
    // the other requests progress.
    ns.run(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(measure(url, state_dir));
    });

    // Reference: the `ip` command, in the same namespace and run.
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..REFERENCE {
        let name = format!("bref{i}");
        add.push(
            ip(&ns_name, &["tuntap", "add", &name, "mode", "tap"])
                + ip(&ns_name, &["link", "set", &name, "master", BRIDGE, "up"]),
        );
    }
    for i in 0..REFERENCE {
        del.push(ip(&ns_name, &["link", "del", &format!("bref{i}")]));
    }
    row(
        "reference: ip tuntap add + ip link set master, per tap",
        &stats(add),
    );
    row("reference: ip link del, per tap", &stats(del));
    drop(nats);
    drop(ns);
}

async fn measure(url: String, state_dir: std::path::PathBuf) {
    let client = async_nats::connect(&url).await.unwrap();
    let bus = Bus::new(client, Subjects::default());
    let host = HostId::new("bench").unwrap();
    let cfg = NetConfig::from_file(NetdFile {
        bridge: BRIDGE.into(),
        subnet: Some("10.200.0.0/23".into()),
        nft_table: "bbench".into(),
        ..NetdFile::default()
    })
    .unwrap();
    let netd = std::sync::Arc::new(
        Netd::start(bus.clone(), host.clone(), cfg, state_dir)
            .await
            .unwrap(),
    );

    // One VM at a time: a fresh lease each round (attach), then stop + delete.
    let (mut a, mut d) = (Vec::new(), Vec::new());
    for i in 0..SINGLE_ROUNDS {
        let (r, t) = timed(attach(&netd, req(i))).await;
        r.unwrap();
        a.push(t);
        let (r, t) = timed(detach(&netd, detach_req(i, true))).await;
        r.unwrap();
        d.push(t);
    }
    row("attach, 1 VM (new lease, new tap)", &stats(a));
    row("detach + release, 1 VM", &stats(d));

    // The same over the bus, as vm-controller calls it (adds NATS and JSON).
    let mut host_svc = banger_bus::ServiceHost::start(
        &bus,
        banger_bus::service::ServiceSpec::new("netd", "bench", &host),
    )
    .await
    .unwrap();
    banger_netd::ops::register(&mut host_svc, &netd)
        .await
        .unwrap();
    let (mut a, mut d) = (Vec::new(), Vec::new());
    for i in 0..SINGLE_ROUNDS {
        let (r, t) =
            timed(bus.call::<net::Attach>(&host, &req(1000 + i), Duration::from_secs(30))).await;
        r.unwrap();
        a.push(t);
        let (r, t) = timed(bus.call::<net::Detach>(
            &host,
            &detach_req(1000 + i, true),
            Duration::from_secs(30),
        ))
        .await;
        r.unwrap();
        d.push(t);
    }
    row("attach over the bus, 1 VM", &stats(a));
    row("detach + release over the bus, 1 VM", &stats(d));

    // Up to 100 VMs and back down, one at a time.
    let mut a = Vec::new();
    for i in 0..MANY {
        let (r, t) = timed(attach(&netd, req(2000 + i))).await;
        r.unwrap();
        a.push(t);
    }
    let (r, again) = timed(attach(&netd, req(2000))).await;
    r.unwrap();
    row(&format!("attach, {MANY} VMs one after another"), &stats(a));
    row(
        "attach again (idempotent), with 100 attached",
        &stats(vec![again]),
    );
    let mut d = Vec::new();
    for i in 0..MANY {
        let (r, t) = timed(detach(&netd, detach_req(2000 + i, false))).await;
        r.unwrap();
        d.push(t);
    }
    row(
        &format!("detach (stop), {MANY} VMs one after another"),
        &stats(d),
    );

    // 50 VMs torn down in one batch, against 50 serial detaches.
    for i in 0..BATCH {
        attach(&netd, req(3000 + i)).await.unwrap();
    }
    let items: Vec<Teardown> = (0..BATCH)
        .map(|i| Teardown {
            vm: vm(3000 + i),
            release: false,
            stopped_at_ms: None,
            catch_up: false,
        })
        .collect();
    let (r, batch) = timed(teardown(&netd, &items)).await;
    assert!(r.unwrap().iter().all(|t| t.tap_removed));
    row(
        &format!("detach {BATCH} VMs in one batch (group delete)"),
        &stats(vec![batch]),
    );
    for i in 0..BATCH {
        attach(&netd, req(3000 + i)).await.unwrap();
    }
    let t = Instant::now();
    for i in 0..BATCH {
        detach(&netd, detach_req(3000 + i, false)).await.unwrap();
    }
    let serial = t.elapsed();
    row(
        &format!("detach {BATCH} VMs serially (total)"),
        &stats(vec![serial]),
    );

    // 50 concurrent `net.detach` calls, as a batch `vm stop` makes them: the deletions that
    // wait while one runs are merged into the next group delete.
    for i in 0..BATCH {
        attach(&netd, req(3000 + i)).await.unwrap();
    }
    let ops_before = netd.kernel.delete_ops();
    let t = Instant::now();
    let all =
        futures::future::join_all((0..BATCH).map(|i| detach(&netd, detach_req(3000 + i, false))))
            .await;
    let concurrent = t.elapsed();
    assert!(all.into_iter().all(|r| r.unwrap().tap_removed));
    row(
        &format!("detach {BATCH} VMs concurrently (total)"),
        &stats(vec![concurrent]),
    );
    println!(
        "  kernel delete operations for {BATCH} concurrent detaches: {}",
        netd.kernel.delete_ops() - ops_before
    );
    println!(
        "  one batch is {:.1}x faster than {BATCH} serial detaches",
        serial.as_secs_f64() / batch.as_secs_f64().max(f64::EPSILON)
    );
    host_svc_stop(host_svc).await;
}

async fn host_svc_stop(host: banger_bus::ServiceHost) {
    let stop = banger_bus::shutdown::CancellationToken::new();
    stop.cancel();
    host.run(stop).await;
}
