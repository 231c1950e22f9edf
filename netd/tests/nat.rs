//! NAT proven by packets, not by reading rules. Three namespaces:
//!
//! ```text
//!  guest ns            host ns (netd)                         outside ns
//!  eth0 (tap) ==wire== bgr<id> -- bridge   uplink0 192.0.2.1 ---- eth0 192.0.2.2
//! ```
//!
//! The guest's `eth0` is a tap whose frames a [`Wire`] copies to and from the VM's host tap, as
//! the hypervisor does. The outside has no route back to the VM subnet, so a connection from the
//! guest only completes when the host masquerades it; the outside then sees the host's uplink
//! address as the source. Port forwards are proven the same way, from the outside and from the
//! host itself, and shown to stop with the VM. And beside Docker: with iptables' FORWARD policy
//! set to DROP as Docker sets it, a guest reaches the outside only once netd has put its
//! accepts in `DOCKER-USER`, and they go when netd exits idle.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use banger_netd::tap;
use banger_proto::event::EventKind;
use banger_proto::net::{Lease, PortForward, Protocol};
use banger_testkit::netns::NetNs;
use banger_testkit::{have_program, require_root, skip};
use common::{Fixture, Options, Wire, vm_id};

/// The host's address on the link to the outside.
const UPLINK_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The outside's address.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// How long a connection attempt may take (a dropped SYN-ACK shows up as this timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The outside world behind an uplink veth, and a guest wired to a VM's tap.
struct World {
    fx: Fixture,
    outside: NetNs,
    guest: NetNs,
    lease: Lease,
    _wire: Wire,
}

impl World {
    fn new(tag: &str, forwards: Vec<PortForward>) -> Self {
        let fx = Fixture::start(tag, Options::default());
        let outside = NetNs::create(&format!("{tag}o"));
        fx.ns.exec(&[
            "ip",
            "link",
            "add",
            "uplink0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            outside.name(),
        ]);
        fx.ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{UPLINK_HOST}/24"),
            "dev",
            "uplink0",
        ]);
        fx.ns.exec(&["ip", "link", "set", "uplink0", "up"]);
        outside.exec(&["ip", "addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"]);
        outside.exec(&["ip", "link", "set", "eth0", "up"]);

        let lease = fx.attach(&vm_id(1), "guest", forwards);
        let guest = NetNs::create(&format!("{tag}g"));
        let guest_fd = guest.run(|| tap::open("eth0")).unwrap();
        let host_tap = lease.tap.clone();
        let host_fd = fx.ns.run(move || tap::open(&host_tap)).unwrap();
        let wire = Wire::connect(host_fd, guest_fd);
        guest.exec(&["ip", "link", "set", "eth0", "address", &lease.mac]);
        guest.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/{}", lease.ip, lease.prefix_len),
            "dev",
            "eth0",
        ]);
        guest.exec(&["ip", "link", "set", "eth0", "up"]);
        guest.exec(&["ip", "route", "add", "default", "via", &lease.gateway]);
        Self {
            fx,
            outside,
            guest,
            lease,
            _wire: wire,
        }
    }

    fn guest_ip(&self) -> IpAddr {
        self.lease.ip.parse().unwrap()
    }
}

/// Connects from inside `ns` to `to`.
fn connect_from(ns: &NetNs, to: SocketAddr) -> std::io::Result<TcpStream> {
    ns.run(move || TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))
}

/// Listens inside `ns` on `at`.
fn listen_in(ns: &NetNs, at: SocketAddr) -> TcpListener {
    ns.run(move || TcpListener::bind(at)).unwrap()
}

/// The source address the listener saw for the connection that just completed.
fn accepted_from(l: &TcpListener) -> IpAddr {
    l.accept().unwrap().1.ip()
}

#[test]
fn the_outside_sees_the_hosts_address_when_a_guest_connects_out() {
    if !require_root() {
        return;
    }
    let w = World::new("nat", vec![]);
    let server = SocketAddr::new(OUTSIDE.into(), 7000);
    let listener = listen_in(&w.outside, server);

    let conn = connect_from(&w.guest, server).unwrap_or_else(|e| {
        panic!(
            "guest {} could not reach the outside through the host: {e}",
            w.lease.ip
        )
    });
    let seen = accepted_from(&listener);
    assert_eq!(seen, IpAddr::V4(UPLINK_HOST), "masqueraded source");
    assert_ne!(seen, w.guest_ip());
    assert_eq!(conn.local_addr().unwrap().ip(), w.guest_ip());
    drop(conn);

    // Control: without banger's table the same connection cannot complete, so it was the
    // masquerade rule that made it work.
    w.fx.ns.exec(&["nft", "delete", "table", "ip", &w.fx.table]);
    let e = connect_from(&w.guest, server).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "{e}"
    );
    w.fx.assert_nothing_leaked();
}

#[test]
fn a_port_forward_reaches_the_guest_from_outside_and_from_the_host_and_goes_with_the_vm() {
    if !require_root() {
        return;
    }
    let forward = PortForward {
        host_port: 8080,
        guest_port: 80,
        protocol: Protocol::Tcp,
    };
    let w = World::new("pf", vec![forward]);
    let guest_server = listen_in(&w.guest, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 80));
    let forwarded = SocketAddr::new(UPLINK_HOST.into(), 8080);

    let c = connect_from(&w.outside, forwarded).unwrap_or_else(|e| {
        panic!("outside could not reach the guest through host port 8080: {e}")
    });
    assert_eq!(accepted_from(&guest_server), IpAddr::V4(OUTSIDE));
    drop(c);

    // From the host itself (the output chain).
    let c = connect_from(&w.fx.ns, forwarded)
        .unwrap_or_else(|e| panic!("the host could not use its own forward: {e}"));
    assert_eq!(c.peer_addr().unwrap(), forwarded);
    let from_host = accepted_from(&guest_server);
    assert_ne!(from_host, IpAddr::V4(OUTSIDE));
    drop(c);

    // Stopped: the forward is gone with the tap; nothing listens on the host port itself.
    w.fx.publish(&vm_id(1), EventKind::Stopped);
    w.fx.wait("the tap to go", || !w.fx.has_link(&w.lease.tap));
    let table = w.fx.table_text().unwrap();
    assert!(!table.contains("dnat to"), "{table}");
    assert!(connect_from(&w.outside, forwarded).is_err());
    w.fx.assert_nothing_leaked();
}

/// `iptables -S` in `ns`.
fn iptables_rules(ns: &NetNs) -> String {
    ns.exec(&["iptables", "-w", "-S"])
}

#[test]
fn guests_reach_the_outside_beside_dockers_forward_drop_policy_and_the_accepts_go_with_netd() {
    if !require_root() {
        return;
    }
    if !have_program("iptables") {
        skip("iptables is not installed (./scripts/setup installs it)");
        return;
    }
    let mut w = World::new("dkr", vec![]);
    let server = SocketAddr::new(OUTSIDE.into(), 7000);
    let listener = listen_in(&w.outside, server);
    // Forwarding works before Docker arrives, and netd touched nothing of iptables.
    drop(connect_from(&w.guest, server).expect("guest to outside before Docker"));
    accepted_from(&listener);
    assert!(!iptables_rules(&w.fx.ns).contains("banger:"));

    // What Docker does when it starts: its user chain first in FORWARD, policy DROP.
    for rule in [
        &["-N", "DOCKER-USER"][..],
        &["-A", "DOCKER-USER", "-j", "RETURN"],
        &["-I", "FORWARD", "-j", "DOCKER-USER"],
        &["-P", "FORWARD", "DROP"],
    ] {
        let mut argv = vec!["iptables", "-w"];
        argv.extend_from_slice(rule);
        w.fx.ns.exec(&argv);
    }
    // Without netd's accepts the guest is cut off, although netd's own table accepts the
    // bridge: a drop in any base chain at the hook wins.
    assert!(w.fx.table_text().unwrap().contains("accept"));
    let e = connect_from(&w.guest, server).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "{e}"
    );

    // A netd (re)starting sees the policy and puts its accepts first in DOCKER-USER.
    w.fx.stop_netd();
    w.fx.start_netd();
    let rules = iptables_rules(&w.fx.ns);
    let comment = format!("--comment \"banger:{}\"", w.fx.table);
    let ours: Vec<&str> = rules.lines().filter(|l| l.contains(&comment)).collect();
    assert_eq!(ours.len(), 3, "{rules}");
    assert!(
        ours.iter().all(|l| l.starts_with("-A DOCKER-USER ")),
        "{rules}"
    );
    drop(connect_from(&w.guest, server).unwrap_or_else(|e| {
        panic!(
            "guest {} still cut off beside FORWARD DROP: {e}\n{rules}",
            w.lease.ip
        )
    }));
    assert_eq!(accepted_from(&listener), IpAddr::V4(UPLINK_HOST));

    // Idle exit: the accepts go with the table; Docker's chain and policy stay as they were.
    w.fx.detach(&vm_id(1), true);
    w.fx.stop_netd();
    let rules = iptables_rules(&w.fx.ns);
    assert!(!rules.contains("banger:"), "{rules}");
    assert!(rules.contains("-P FORWARD DROP"), "{rules}");
    assert!(rules.contains("-A DOCKER-USER -j RETURN"), "{rules}");
    assert!(w.fx.table_text().is_none(), "the nftables table went too");
    w.fx.assert_nothing_leaked();
}
