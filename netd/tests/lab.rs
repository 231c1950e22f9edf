//! Lab mode between two "hosts": two network namespaces joined by a veth (the lab link), one
//! nats-server with JetStream on host A, a real `banger-netd` on each with the same
//! `lab_range`. Proven with real routes and packets:
//!
//! ```text
//!  guest A ==wire== tap -- bridge  A  lab0 192.0.2.1 ---- lab0 192.0.2.2  B  bridge -- tap ==wire== guest B
//!                        (10.77.x.0/24)     nats-server                  (10.77.y.0/24)
//! ```
//!
//! Subnet claims are also raced in-process against a real JetStream KV bucket.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use banger_bus::{Bus, RequestError};
use banger_netd::config::LabConfig;
use banger_netd::subnets::{self, ClaimError};
use banger_netd::tap;
use banger_proto::net::{AttachRequest, Lease, NetStatus, NetStatusRequest};
use banger_proto::op::{Operation, net};
use banger_proto::{HostId, Subjects, VmName};
use banger_testkit::netns::NetNs;
use banger_testkit::{NatsServer, Process, require_root, wait_until_blocking};
use common::{Wire, vm_id};
use ipnet::Ipv4Net;

const LAB_RANGE: &str = "10.77.0.0/16";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// netd's route protocol number (the default).
const PROTO: &str = "77";
/// Peer discovery every second, a silent peer forgotten after three.
const PEER_INTERVAL_SECS: u64 = 1;
const PEER_EXPIRY_SECS: u64 = 3;
/// Generous bound for routes to appear or go (a few discovery rounds on a loaded machine).
const CONVERGE: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One lab host: its namespace, config and netd.
struct Host {
    ns: NetNs,
    id: &'static str,
    dir: tempfile::TempDir,
    nats_url: String,
    netd: Option<Process>,
}

impl Host {
    fn new(ns: NetNs, id: &'static str, nats_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("banger.toml"),
            format!(
                "[netd]\nbridge = \"labbr\"\nnft_table = \"banger_lab\"\n\
                 lab_range = \"{LAB_RANGE}\"\nsubnet_prefix = 24\n\
                 peer_interval_secs = {PEER_INTERVAL_SECS}\npeer_expiry_secs = {PEER_EXPIRY_SECS}\n\
                 reconcile_interval_secs = 3600\nreconcile_grace_secs = 0\n"
            ),
        )
        .unwrap();
        Self {
            ns,
            id,
            dir,
            nats_url: nats_url.to_owned(),
            netd: None,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("banger.toml")
    }

    /// Starts netd and waits until it answers `status`; returns the status.
    fn start_netd(&mut self) -> NetStatus {
        let mut cmd = self.ns.command(env!("CARGO_BIN_EXE_banger-netd"));
        cmd.args(["--nats-url", &self.nats_url, "--host-id", self.id])
            .arg("--config")
            .arg(self.config())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(self.dir.path().join("run"))
            .env("RUST_LOG", "warn");
        self.netd = Some(Process::spawn("banger-netd", cmd));
        let mut status = None;
        wait_until_blocking("netd to answer status", Duration::from_secs(30), || {
            status = self.request::<net::Status>(NetStatusRequest {}).ok();
            status.is_some()
        });
        status.unwrap()
    }

    /// SIGTERM, and a clean exit.
    fn stop_netd(&mut self) {
        if let Some(mut p) = self.netd.take() {
            let status = p.terminate(Duration::from_secs(30)).unwrap();
            assert!(status.success(), "netd exited with {status}");
        }
    }

    fn request<O: Operation<At = HostId>>(&self, req: O::Request) -> Result<O::Reply, String> {
        let (url, host) = (self.nats_url.clone(), HostId::new(self.id).unwrap());
        self.ns.block_on(move || async move {
            let bus = common::connect(&url).await;
            bus.call::<O>(&host, &req, Duration::from_secs(10))
                .await
                .map_err(|e: RequestError| e.to_string())
        })
    }

    fn attach(&self, n: u32, name: &str) -> Lease {
        self.request::<net::Attach>(AttachRequest {
            vm_id: vm_id(n),
            vm_name: VmName::new(name).unwrap(),
            port_forwards: vec![],
        })
        .unwrap()
    }

    /// netd's routes (`ip route show proto 77`), one line each.
    fn routes(&self) -> Vec<String> {
        self.ns
            .exec(&["ip", "route", "show", "proto", PROTO])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn has_route(&self, subnet: &str, via: Ipv4Addr) -> bool {
        self.routes()
            .iter()
            .any(|l| l.starts_with(&format!("{subnet} via {via} ")))
    }
}

/// A guest namespace wired to `lease`'s tap on `host`, as the hypervisor would.
struct Guest {
    ns: NetNs,
    ip: Ipv4Addr,
    _wire: Wire,
}

impl Guest {
    fn new(tag: &str, host: &Host, lease: &Lease) -> Self {
        let ns = NetNs::create(tag);
        let guest_fd = ns.run(|| tap::open("eth0")).unwrap();
        let host_tap = lease.tap.clone();
        let host_fd = host.ns.run(move || tap::open(&host_tap)).unwrap();
        let wire = Wire::connect(host_fd, guest_fd);
        ns.exec(&["ip", "link", "set", "eth0", "address", &lease.mac]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/{}", lease.ip, lease.prefix_len),
            "dev",
            "eth0",
        ]);
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
        ns.exec(&["ip", "route", "add", "default", "via", &lease.gateway]);
        Self {
            ns,
            ip: lease.ip.parse().unwrap(),
            _wire: wire,
        }
    }
}

#[test]
fn vms_on_two_hosts_reach_each_other_by_address_through_netds_routes() {
    if !require_root() {
        return;
    }
    let ns_a = NetNs::create("la");
    let ns_b = NetNs::create("lb");
    ns_a.exec(&[
        "ip",
        "link",
        "add",
        "lab0",
        "type",
        "veth",
        "peer",
        "name",
        "lab0",
        "netns",
        ns_b.name(),
    ]);
    for (ns, addr) in [(&ns_a, ADDR_A), (&ns_b, ADDR_B)] {
        ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "lab0"]);
        ns.exec(&["ip", "link", "set", "lab0", "up"]);
    }
    // The bus listens on the lab link, so both netds reach it and each finds its host
    // address as the source of its route to NATS (no host_address configured).
    let nats = ns_a.run(|| NatsServer::start_with_args(&["-a", "0.0.0.0"]));
    let url = format!("nats://{ADDR_A}:{}", nats.port());
    let mut a = Host::new(ns_a, "ha", &url);
    let mut b = Host::new(ns_b, "hb", &url);

    let sa = a.start_netd().subnet;
    let sb = b.start_netd().subnet;
    let (na, nb): (Ipv4Net, Ipv4Net) = (sa.parse().unwrap(), sb.parse().unwrap());
    let range: Ipv4Net = LAB_RANGE.parse().unwrap();
    assert!(range.contains(&na) && range.contains(&nb), "{sa} {sb}");
    assert_ne!(na, nb, "two hosts were given the same subnet");
    assert_eq!((na.prefix_len(), nb.prefix_len()), (24, 24));

    wait_until_blocking("A to route B's VM subnet via B", CONVERGE, || {
        a.has_route(&sb, ADDR_B)
    });
    wait_until_blocking("B to route A's VM subnet via A", CONVERGE, || {
        b.has_route(&sa, ADDR_A)
    });
    assert_eq!(a.routes().len(), 1, "{:?}", a.routes());

    // A VM on each host; B's connects to A's by address, and A's sees B's own address: the
    // traffic was routed, not masqueraded.
    let la = a.attach(1, "va");
    let lb = b.attach(2, "vb");
    let ga = Guest::new("lga", &a, &la);
    let gb = Guest::new("lgb", &b, &lb);
    let at = SocketAddr::new(ga.ip.into(), 7100);
    let listener = ga.ns.run(move || TcpListener::bind(at)).unwrap();
    gb.ns
        .run(move || TcpStream::connect_timeout(&at, CONNECT_TIMEOUT))
        .unwrap();
    let seen: IpAddr = listener.accept().unwrap().1.ip();
    assert_eq!(
        seen,
        IpAddr::V4(gb.ip),
        "cross-host traffic was masqueraded"
    );

    // A restarted netd removes its routes on exit and gets its own subnet back.
    b.stop_netd();
    assert!(b.routes().is_empty(), "netd left routes: {:?}", b.routes());
    assert_eq!(b.start_netd().subnet, sb);
    wait_until_blocking("B to route A's subnet again", CONVERGE, || {
        b.has_route(&sa, ADDR_A)
    });

    // B moves to another subnet: A replaces its route (the old one goes, nothing else stays).
    b.stop_netd();
    let moved = "10.77.200.0/24";
    let config = std::fs::read_to_string(b.config()).unwrap();
    std::fs::write(
        b.config(),
        config.replace("[netd]\n", &format!("[netd]\nsubnet = \"{moved}\"\n")),
    )
    .unwrap();
    assert_eq!(b.start_netd().subnet, moved);
    wait_until_blocking("A to route B's new subnet, and only that", CONVERGE, || {
        a.has_route(moved, ADDR_B) && a.routes().len() == 1
    });

    // A host that goes away for longer than peer_expiry_secs loses its route; only netd's
    // own routes were ever touched (the lab link's route is still there).
    b.stop_netd();
    wait_until_blocking("A to drop the route to the silent host", CONVERGE, || {
        a.routes().is_empty()
    });
    assert!(
        a.ns.exec(&["ip", "route", "show"])
            .contains("192.0.2.0/24 dev lab0"),
        "the lab link's own route was removed"
    );
    a.stop_netd();
    drop(nats);
}

fn lab(range: &str) -> LabConfig {
    LabConfig {
        range: range.parse().unwrap(),
        subnet_prefix: 24,
        bucket_replicas: 1,
    }
}

#[test]
fn racing_hosts_never_claim_the_same_subnet_and_a_host_gets_its_own_back() {
    if !banger_testkit::have_program("nats-server") {
        banger_testkit::skip("nats-server is not installed");
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bus = Bus::new(
            async_nats::connect(&url).await.unwrap(),
            Subjects::default(),
        );
        // Six hosts race for the four /24s of a /22.
        let lab = lab("10.77.0.0/22");
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (bus, lab) = (bus.clone(), lab.clone());
            tasks.push(tokio::spawn(async move {
                let host = HostId::new(format!("h{i}")).unwrap();
                (i, subnets::claim(&bus, &host, &lab, None).await)
            }));
        }
        let mut won = Vec::new();
        let mut exhausted = 0;
        for t in tasks {
            match t.await.unwrap() {
                (i, Ok(s)) => won.push((i, s)),
                (_, Err(ClaimError::Exhausted { .. })) => exhausted += 1,
                (i, Err(e)) => panic!("h{i}: {e}"),
            }
        }
        let mut subnets: Vec<Ipv4Net> = won.iter().map(|(_, s)| *s).collect();
        subnets.sort();
        subnets.dedup();
        assert_eq!(subnets.len(), 4, "{won:?}");
        assert_eq!(exhausted, 2);

        // A host asking again (a restart) gets the same subnet.
        let (i, first) = won[0];
        let host = HostId::new(format!("h{i}")).unwrap();
        assert_eq!(
            subnets::claim(&bus, &host, &lab, None).await.unwrap(),
            first
        );
        // Another host's subnet cannot be configured; a host moving to a configured subnet
        // drops its older claim, which frees it for others.
        let (j, other) = won[1];
        assert!(matches!(
            subnets::claim(&bus, &host, &lab, Some(other)).await,
            Err(ClaimError::Taken { holder, .. }) if holder == format!("h{j}")
        ));
        let wide = self::lab("10.77.0.0/16");
        let fixed: Ipv4Net = "10.77.9.0/24".parse().unwrap();
        assert_eq!(
            subnets::claim(&bus, &host, &wide, Some(fixed))
                .await
                .unwrap(),
            fixed
        );
        let newcomer = HostId::new("h9").unwrap();
        assert_eq!(
            subnets::claim(&bus, &newcomer, &lab, None).await.unwrap(),
            first
        );
    });
}
