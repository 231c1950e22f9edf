//! dnsd under load, measured: the code shared by `cargo bench -p banger-dnsd --bench dns_serve`
//! and the `banger-bench` harness's DNS rows. dnsd runs in-process ([`InProcess`]), fed by a
//! stand-in controller answering `vm.list` with N running VMs ([`FakeController`]), under load
//! from `dnsperf` and a small built-in UDP load generator; Knot DNS (`knotd`) serves the same
//! zone in the same run as the reference; and the delay from a `started` event to its record
//! being served. [`measure_size`] does one fleet size; it asserts nothing, it measures.
//!
//! Both servers run side by side and are loaded in turn, [`ROUNDS`] times each (dnsd, knotd,
//! dnsd, ...); each server's result is its median round by queries per second. On a shared
//! machine one 5-second run of either varied by a fifth from the next, and a single run each,
//! one after the other, compared two different moments.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "benchmark code: a panic is a failed run; casts turn small counts into rates"
)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use banger_proto::dns::DnsStatusRequest;
use banger_proto::event::EventKind;
use banger_proto::op::{Lab, dns};
use banger_proto::vm::VmInfo;

use crate::dns_packets::{NOERROR, query_packet, raw_udp, rcode};
use crate::dnsd_in_process::InProcess;
use crate::stand_in_controller::{FakeController, bus, publish, running};
use crate::{NatsServer, Process, free_port, have_program, wait_until};

/// How long each load run lasts.
pub const LOAD_SECS: u64 = 5;
/// Concurrent clients of the built-in generator (each keeps one query in flight).
pub const BUILTIN_CLIENTS: usize = 16;
/// Events measured per size.
pub const EVENT_SAMPLES: usize = 50;
/// How many times each server is loaded, in turns (see the module doc).
pub const ROUNDS: usize = 3;
/// dnsperf's flags besides server, port, duration and query file.
pub const DNSPERF_FLAGS: [&str; 6] = ["-c", "8", "-q", "200", "-t", "2"];

fn vm_name(i: usize) -> String {
    format!("vm-{i:05}")
}

fn vm_ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

fn fleet(n: usize) -> Vec<VmInfo> {
    (0..n)
        .map(|i| {
            running(
                u32::try_from(i + 1).unwrap(),
                &vm_name(i),
                "lab1",
                &vm_ip(i),
            )
        })
        .collect()
}

/// dnsperf's query file: both name forms of every VM.
fn query_file(dir: &Path, n: usize) -> PathBuf {
    let mut s = String::new();
    for i in 0..n {
        let _ = writeln!(s, "{}.vm A", vm_name(i));
        let _ = writeln!(s, "{}.lab1.vm A", vm_name(i));
    }
    let p = dir.join(format!("queries-{n}.txt"));
    std::fs::write(&p, s).unwrap();
    p
}

/// What `dnsperf` reported.
#[derive(Debug, Clone)]
pub struct Dnsperf {
    /// Queries per second.
    pub qps: f64,
    /// Average latency.
    pub avg: Duration,
    /// Its "Queries lost" line.
    pub lost: String,
    /// Queries answered ("Queries completed").
    pub completed: u64,
    /// CPU time the server's serving threads used during the run (dnsd: its `dnsd-*` threads;
    /// knotd: the whole process), from `/proc/<pid>/task/*/schedstat`: how much work each
    /// answer costs, which a shared machine's load distorts far less than queries per second.
    pub server_cpu: Duration,
}

impl Dnsperf {
    /// The server's CPU time per answered query.
    pub fn cpu_per_answer(&self) -> Duration {
        let n = u32::try_from(self.completed).unwrap_or(u32::MAX).max(1);
        self.server_cpu / n
    }
}

/// Which threads serve queries: the process and a filter on the thread names.
#[derive(Debug, Clone, Copy)]
enum Server {
    /// This process's `dnsd-*` threads (the UDP readers and the relay).
    InProcessDnsd,
    /// Every thread of knotd.
    Knot(u32),
}

impl Server {
    /// CPU time used so far by the serving threads (nanoseconds on a CPU, from schedstat).
    fn cpu_time(self) -> Duration {
        let (pid, prefix) = match self {
            Self::InProcessDnsd => ("self".to_owned(), "dnsd-"),
            Self::Knot(pid) => (pid.to_string(), ""),
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Duration::ZERO;
        };
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim().starts_with(prefix))
            })
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map(Duration::from_nanos)
            .sum()
    }
}

/// One server under load.
#[derive(Debug, Clone)]
pub struct Load {
    /// `dnsperf`'s numbers, when it is installed and its output could be read.
    pub dnsperf: Option<Dnsperf>,
    /// Answers per second of the built-in generator.
    pub builtin_qps: f64,
    /// Latencies of the built-in generator's answered queries, sorted.
    pub latencies: Vec<Duration>,
}

/// One fleet size: dnsd, the knotd reference, and the event delay.
#[derive(Debug, Clone)]
pub struct SizeResult {
    /// VMs in the fleet (each has two names: records = 2 × vms).
    pub vms: usize,
    /// dnsd's start until every record was served (its `vm.list` load).
    pub load_time: Duration,
    /// dnsd under load: its median round.
    pub dnsd: Load,
    /// knotd under the same load, when installed: its median round.
    pub knot: Option<Load>,
    /// Queries per second of every round, in the order they ran (dnsperf's, else the built-in
    /// generator's): dnsd's, then knotd's (empty without knotd).
    pub rounds_qps: (Vec<f64>, Vec<f64>),
    /// `started` event published → record served, sorted.
    pub events: Vec<Duration>,
}

fn dnsperf(port: u16, file: &Path, server: Server) -> Option<Dnsperf> {
    if !have_program("dnsperf") {
        return None;
    }
    let cpu_before = server.cpu_time();
    let out = Command::new("dnsperf")
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-l",
            &LOAD_SECS.to_string(),
        ])
        .args(DNSPERF_FLAGS)
        .arg("-d")
        .arg(file)
        .output()
        .ok()?;
    let server_cpu = server.cpu_time().saturating_sub(cpu_before);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    let qps = field("Queries per second:")?.parse().ok()?;
    let avg: f64 = field("Average Latency (s):")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let lost = field("Queries lost:").unwrap_or_default();
    let completed = field("Queries completed:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Dnsperf {
        qps,
        avg: Duration::from_secs_f64(avg),
        lost,
        completed,
        server_cpu,
    })
}

/// The built-in generator: `BUILTIN_CLIENTS` sockets, each sending the next query as soon as
/// the previous one was answered, for `LOAD_SECS`. Returns answers per second and the sorted
/// latencies.
async fn builtin_load(addr: SocketAddr, n: usize) -> (f64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..BUILTIN_CLIENTS {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(addr).await.unwrap();
            let mut lat = Vec::new();
            let mut buf = vec![0u8; 1500];
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let id = (i & 0xffff) as u16;
                let q = query_packet(id, &format!("{}.vm", vm_name(i % n)), 1, 1, 0);
                let t = Instant::now();
                sock.send(&q).await.unwrap();
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await
                {
                    lat.push(t.elapsed());
                }
                i += BUILTIN_CLIENTS;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(LOAD_SECS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / secs, all)
}

async fn load(addr: SocketAddr, n: usize, file: &Path, server: Server) -> Load {
    let dnsperf = dnsperf(addr.port(), file, server);
    let (builtin_qps, latencies) = builtin_load(addr, n).await;
    Load {
        dnsperf,
        builtin_qps,
        latencies,
    }
}

/// Publishes `started` for new VMs one at a time and measures until each is answered.
async fn event_to_served(nats: &NatsServer, addr: SocketAddr, base: usize) -> Vec<Duration> {
    let bus = bus(nats).await;
    let mut out = Vec::new();
    for k in 0..EVENT_SAMPLES {
        let i = base + k;
        let vm = running(
            u32::try_from(i + 1).unwrap(),
            &vm_name(i),
            "lab2",
            &vm_ip(i),
        );
        let q = query_packet(7, &format!("{}.vm", vm_name(i)), 1, 1, 0);
        let t = Instant::now();
        publish(&bus, EventKind::Started, k as u64 + 1, &vm).await;
        loop {
            if let Some(r) = raw_udp(addr, &q, Duration::from_secs(1)).await
                && rcode(&r) == NOERROR
                && r[7] > 0
            {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "event never served");
        }
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// knotd's UDP threads: as many as dnsd's UDP reader threads (one per CPU, which is also
/// knotd's own default), set explicitly so the two are compared with the same number.
pub fn knot_udp_workers() -> usize {
    banger_dnsd::listen::udp_reader_threads()
}

/// How each server is set up to serve UDP, for the rows' notes.
pub fn servers_setup() -> String {
    format!(
        "dnsd: 1 UDP socket, {} reader threads, batches of up to {} (recvmmsg/sendmmsg); \
         knotd: udp-workers {} (one SO_REUSEPORT socket each), defaults otherwise",
        banger_dnsd::listen::udp_reader_threads(),
        banger_dnsd::mmsg::BATCH,
        knot_udp_workers(),
    )
}

/// Serves the same records with knotd, when installed.
fn start_knot(dir: &Path, n: usize) -> Option<(Process, SocketAddr)> {
    if !have_program("knotd") {
        return None;
    }
    let port = free_port();
    let mut zone = String::from(
        "$ORIGIN vm.\n$TTL 5\n@ SOA localhost. nobody.invalid. 1 3600 600 86400 5\n@ NS localhost.\n",
    );
    for i in 0..n {
        let _ = writeln!(zone, "{} A {}", vm_name(i), vm_ip(i));
        let _ = writeln!(zone, "{}.lab1 A {}", vm_name(i), vm_ip(i));
    }
    let kdir = dir.join(format!("knot-{n}"));
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::write(kdir.join("vm.zone"), zone).unwrap();
    let conf = format!(
        "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
         \x20   udp-workers: {workers}\n\
         database:\n    storage: \"{d}\"\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n\
         zone:\n  - domain: vm\n",
        d = kdir.display(),
        workers = knot_udp_workers(),
    );
    std::fs::write(kdir.join("knot.conf"), conf).unwrap();
    let mut cmd = Command::new("knotd");
    cmd.arg("-c").arg(kdir.join("knot.conf"));
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Some((
        Process::spawn("knotd", cmd),
        format!("127.0.0.1:{port}").parse().unwrap(),
    ))
}

/// Measures one fleet size `n` (`n` VMs, `2n` records): dnsd loaded from a stand-in
/// controller, dnsperf and the built-in generator against it, the event delay, then knotd
/// serving the same zone under the same load. Scratch files go under `dir`.
///
/// # Panics
/// When a part cannot start (nats-server, dnsd, knotd not serving within 30 s).
pub async fn measure_size(dir: &Path, n: usize) -> SizeResult {
    // 10,000 VM snapshots in one `vm.list` answer are ~3.5 MB, over nats-server's default
    // 1 MB max_payload: raise it for this run (the real controller needs this or paging).
    let nats_conf = dir.join("nats.conf");
    std::fs::write(&nats_conf, "max_payload: 8MB\n").unwrap();
    let nats = NatsServer::start_with_args(&["-c", nats_conf.to_str().unwrap()]);
    let _controller = FakeController::start(&nats, "lab1", fleet(n), true).await;
    let t = Instant::now();
    let dnsd = InProcess::start(
        &nats,
        "rebuild_interval_secs = 3600\ngather_timeout_ms = 10000",
    )
    .await;
    let bus = bus(&nats).await;
    wait_until(
        "the fleet to be served",
        Duration::from_secs(60),
        || async {
            bus.call::<dns::Status>(&Lab, &DnsStatusRequest {}, Duration::from_secs(5))
                .await
                .is_ok_and(|s| s.records as usize == 2 * n)
        },
    )
    .await;
    let load_time = t.elapsed();
    let file = query_file(dir, n);
    let knot_server = start_knot(dir, n);
    if let Some((_, addr)) = &knot_server {
        let addr = *addr;
        let q = query_packet(1, &format!("{}.vm", vm_name(n - 1)), 1, 1, 0);
        wait_until(
            "knotd to serve the zone",
            Duration::from_secs(30),
            || async {
                raw_udp(addr, &q, Duration::from_millis(200))
                    .await
                    .is_some_and(|r| rcode(&r) == NOERROR && r[7] > 0)
            },
        )
        .await;
    }
    let mut dnsd_rounds = Vec::new();
    let mut knot_rounds = Vec::new();
    for _ in 0..ROUNDS {
        dnsd_rounds.push(load(dnsd.addr, n, &file, Server::InProcessDnsd).await);
        if let Some((process, addr)) = &knot_server {
            knot_rounds.push(load(*addr, n, &file, Server::Knot(process.pid())).await);
        }
    }
    drop(knot_server);
    let events = event_to_served(&nats, dnsd.addr, n).await;
    dnsd.stop().await.unwrap();
    let rounds_qps = (
        dnsd_rounds.iter().map(Load::qps).collect(),
        knot_rounds.iter().map(Load::qps).collect(),
    );
    let dnsd_load = median_round(dnsd_rounds).unwrap();
    let knot = median_round(knot_rounds);
    SizeResult {
        vms: n,
        load_time,
        dnsd: dnsd_load,
        knot,
        rounds_qps,
        events,
    }
}

impl Load {
    /// Queries per second: dnsperf's, else the built-in generator's.
    pub fn qps(&self) -> f64 {
        self.dnsperf.as_ref().map_or(self.builtin_qps, |d| d.qps)
    }
}

/// The round whose queries per second are the median (`None` when there was none).
fn median_round(mut rounds: Vec<Load>) -> Option<Load> {
    rounds.sort_by(|a, b| a.qps().total_cmp(&b.qps()));
    let middle = rounds.len() / 2;
    rounds.into_iter().nth(middle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(qps: f64) -> Load {
        Load {
            dnsperf: None,
            builtin_qps: qps,
            latencies: Vec::new(),
        }
    }

    #[test]
    fn the_median_round_is_the_middle_one_by_queries_per_second() {
        let median = median_round(vec![round(300.0), round(100.0), round(200.0)]);
        assert_eq!(median.map(|l| l.qps()), Some(200.0));
        assert!(median_round(Vec::new()).is_none());
    }
}
