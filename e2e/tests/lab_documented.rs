//! The lab as `docs/lab.md` documents it, so the page cannot drift from what works: three
//! hosts (network namespaces named as in the docs), the configs from the page's own
//! `scripts/lab-init` command, nats-server on those files as they are (route authentication
//! on: a server without the route credentials cannot join), the services with each host's
//! `banger.toml` as the page writes it, the operator's CLI config as generated.
//!
//! Then the page's promises: VMs on every host, a VM on one host pings a VM on another, dnsd
//! (listening where the page says) resolves every host's VMs for the other hosts, `vm list`
//! from any host lists them all and says they are simulated. A host is cut off: creates on
//! the others keep working within seconds (reported), `vm list` names the cut host and exits
//! 3, the cut host's own `vm list` admits it is partial. The link returns: everything
//! converges (reported).
//!
//! Only the hypervisor is simulated (banger-fcsim); NATS, the services, taps, bridges, routes
//! and DNS are real.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_e2e::documented_lab::{DocumentedLab, HOSTS};
use banger_e2e::text;
use banger_testkit::{Process, have_program, require_root, skip, wait_until_blocking};

/// Bound for anything that converges over the bus or the routes.
const CONVERGE: Duration = Duration::from_secs(90);
/// The bound the docs promise for creates on healthy hosts after another host is cut
/// ("within seconds"): the client notices a dead server in 4–6 s, the nodes a lost route in
/// about as long; the rest is margin for a loaded CI machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// `vm list --json` on host `i`.
struct Listing {
    code: Option<i32>,
    vms: Vec<serde_json::Value>,
    unreachable: Vec<String>,
    membership: String,
    stderr: String,
}

fn list(lab: &DocumentedLab, i: usize) -> Listing {
    let out = lab.banger(i, &["--json", "--timeout", "10", "vm", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Listing {
        code: out.status.code(),
        vms: v["vms"].as_array().cloned().unwrap_or_default(),
        unreachable: v["unreachable_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect(),
        membership: v["membership"].as_str().unwrap_or_default().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ip_of(l: &Listing, name: &str) -> String {
    l.vms
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["network"]["ip"].as_str())
        .unwrap_or_else(|| panic!("{name} has no address in vm list: {:?}", l.vms))
        .to_owned()
}

fn names(l: &Listing) -> BTreeSet<String> {
    l.vms
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect()
}

/// `dig +short NAME A` run on host `from` against dnsd on `lab-a`'s lab address.
fn dig(lab: &DocumentedLab, from: usize, name: &str) -> String {
    let out = lab.hosts[from]
        .ns
        .command("dig")
        .args([
            &format!("@{}", lab.hosts[0].addr),
            "+short",
            "+tries=1",
            "+time=2",
            name,
            "A",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn guest_pings(lab: &DocumentedLab, from: &str, to_ip: &str) -> bool {
    lab.banger(
        0,
        &[
            "vm", "exec", from, "--", "ping", "-c", "1", "-W", "2", to_ip,
        ],
    )
    .status
    .success()
}

/// Runs `banger ARGS` on host `i` until it succeeds; returns how long that took from `since`
/// and how many attempts it needed.
fn until_it_works(lab: &DocumentedLab, i: usize, args: &[&str], since: Instant) -> (Duration, u32) {
    let mut last = None;
    let mut attempts = 0;
    while since.elapsed() < CONVERGE {
        attempts += 1;
        let out = lab.banger(i, args);
        if out.status.success() {
            return (since.elapsed(), attempts);
        }
        last = Some(text(&out));
    }
    panic!(
        "banger {} on {} never worked: {}",
        args.join(" "),
        HOSTS[i],
        last.unwrap_or_default()
    );
}

/// A server started without the route credentials, dialling `lab-b`'s route port from
/// `lab-a`'s namespace, is refused: route authentication is really on.
fn an_intruder_cannot_join(lab: &DocumentedLab) {
    let conf = lab.dir.join("intruder.conf");
    std::fs::write(
        &conf,
        "server_name: intruder\nlisten: \"127.0.0.1:14222\"\n\
         cluster {\n  name: banger-lab\n  listen: \"127.0.0.1:16222\"\n  \
         routes: [\"nats-route://lab-b:6222\"]\n}\n",
    )
    .unwrap();
    let mut cmd = lab.hosts[0].ns.command("nats-server");
    cmd.arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _intruder = Process::spawn("nats-server", cmd);
    wait_until_blocking(
        "lab-b's node to refuse a route without credentials",
        CONVERGE,
        || {
            let log = lab.nats_log(1);
            log.contains("authentication error") || log.contains("Authorization Violation")
        },
    );
    assert_eq!(
        lab.num_routes(1),
        Some(2),
        "the intruder joined lab-b's node"
    );
}

#[test]
fn the_documented_lab_works_and_a_lost_host_never_breaks_the_healthy_ones() {
    if !require_root() {
        return;
    }
    for program in ["nats-server", "dig", "mkfs.ext4"] {
        if !have_program(program) {
            skip(&format!("{program} is not installed"));
            return;
        }
    }
    let started = Instant::now();
    let mut lab = DocumentedLab::start_cluster();
    eprintln!(
        "cluster from lab-init's configs up in {:?}",
        started.elapsed()
    );
    an_intruder_cannot_join(&lab);
    for i in 0..HOSTS.len() {
        lab.start_services(i);
    }
    lab.wait_for_services();
    // lab.md: the event history, created once by the operator, replicated on the three nodes.
    lab.banger_ok(0, &["events", "--create-history", "--replicas", "3"]);
    // The controllers' buckets (VM names, heartbeats) have the replicas of netd's subnet
    // bucket, 3, so losing one node loses none of them. A controller that made its bucket
    // before any netd had made the subnet bucket made it with 1 replica; when that replica's
    // node was the one cut off below, no host could create a VM for the rest of the test.
    for bucket in ["VM_NAMES", "VM_CONTROLLERS"] {
        let stream = format!("KV_BANGER_{bucket}");
        wait_until_blocking(&format!("{stream} to have 3 replicas"), CONVERGE, || {
            lab.stream_replicas(&stream) == Some(3)
        });
    }

    // lab.md: images are registered per host.
    let image_dir = lab.dir.join("image");
    std::fs::create_dir_all(&image_dir).unwrap();
    let (kernel, rootfs) = banger_e2e::stand_in_image_files(&image_dir);
    for h in HOSTS {
        lab.banger_ok(
            0,
            &[
                "image",
                "register",
                "demo",
                "--kernel",
                kernel.to_str().unwrap(),
                "--rootfs",
                rootfs.to_str().unwrap(),
                "--host",
                h,
            ],
        );
    }
    for (vm, host) in [("v1", 0), ("v2", 1), ("v3", 2)] {
        // Each from its own host's CLI.
        lab.banger_ok(
            host,
            &[
                "vm",
                "create",
                vm,
                "--image",
                "demo",
                "--host",
                HOSTS[host],
                "--wait",
            ],
        );
    }

    // `vm list` from any host: every VM, complete, and it says they are simulated.
    let every: BTreeSet<String> = ["v1", "v2", "v3"].map(str::to_owned).into();
    for (i, host) in HOSTS.iter().enumerate() {
        let l = list(&lab, i);
        assert_eq!(l.code, Some(0), "on {host}: {}", l.stderr);
        assert_eq!(names(&l), every, "on {host}");
        assert_eq!(l.membership, "known");
        assert!(l.stderr.contains("SIMULATED HYPERVISOR"), "{}", l.stderr);
    }
    let l = list(&lab, 0);
    let (ip1, ip2, ip3) = (ip_of(&l, "v1"), ip_of(&l, "v2"), ip_of(&l, "v3"));

    // Cross-host ping, through netd's routes.
    wait_until_blocking("v2 (lab-b) to ping v3 (lab-c)", CONVERGE, || {
        guest_pings(&lab, "v2", &ip3)
    });
    wait_until_blocking("v3 (lab-c) to ping v1 (lab-a)", CONVERGE, || {
        guest_pings(&lab, "v3", &ip1)
    });
    // Names for every host's VMs, from dnsd on lab-a, asked from lab-b.
    wait_until_blocking("dnsd on lab-a to serve every VM to lab-b", CONVERGE, || {
        dig(&lab, 1, "v3.lab-c.vm") == ip3 && dig(&lab, 1, "v2.vm") == ip2
    });
    assert_eq!(dig(&lab, 2, "v1.lab-a.vm"), ip1);

    // Cut lab-c off.
    let cut_at = Instant::now();
    lab.cut(2);
    let (placed, placed_attempts) = until_it_works(
        &lab,
        1,
        &[
            "--timeout",
            "10",
            "vm",
            "create",
            "v4",
            "--image",
            "demo",
            "--host",
            "lab-b",
        ],
        cut_at,
    );
    eprintln!(
        "after the cut: vm create --host lab-b worked {placed:?} after the cut \
         (attempt {placed_attempts})"
    );
    let unplaced_from = Instant::now();
    let (unplaced, unplaced_attempts) = until_it_works(
        &lab,
        0,
        &["--timeout", "10", "vm", "create", "v5", "--image", "demo"],
        unplaced_from,
    );
    eprintln!(
        "after the cut: an unplaced vm create worked {:?} after the cut, {unplaced:?} after it \
         was first tried (attempt {unplaced_attempts})",
        cut_at.elapsed()
    );
    assert!(
        placed <= FAILOVER_BOUND,
        "creates on a healthy host took {placed:?} to work again after the cut"
    );
    assert!(
        unplaced <= FAILOVER_BOUND,
        "an unplaced create took {unplaced:?} to work after the cut"
    );
    let mut seen = None;
    wait_until_blocking("vm list on lab-a to name lab-c", CONVERGE, || {
        let l = list(&lab, 0);
        let ok = l.code == Some(3) && l.unreachable == ["lab-c"];
        seen = Some(l);
        ok
    });
    let l = seen.unwrap();
    eprintln!(
        "after the cut: lab-c named unreachable at {:?}",
        cut_at.elapsed()
    );
    let listed = names(&l);
    for vm in ["v1", "v2", "v4", "v5"] {
        assert!(listed.contains(vm), "{vm} missing: {listed:?}");
    }
    assert!(
        l.stderr.contains("host lab-c did not answer"),
        "{}",
        l.stderr
    );
    // `status` on lab-a names lab-c's services as silent, and only those. It finds the members
    // in netd's subnet bucket; when the cut node led that bucket's stream, JetStream first
    // elects a new leader (seconds), and until then status says the membership is unknown.
    let mut status = None;
    wait_until_blocking("status on lab-a to name lab-c's services", CONVERGE, || {
        let out = lab.banger(0, &["status"]);
        let done = out.status.code() == Some(3);
        status = Some(out);
        done
    });
    let out = status.unwrap();
    let report = text(&out);
    assert_eq!(out.status.code(), Some(3), "{report}");
    for svc in ["vm-controller", "netd", "stord"] {
        assert!(
            report.contains(&format!("{svc} on lab-c did not answer $SRV.PING")),
            "{report}"
        );
    }
    assert!(
        !report.contains("on lab-a did not answer") && !report.contains("on lab-b did not answer"),
        "{report}"
    );
    // The cut-off host's own list is partial, and says so (the others, or the membership).
    let own = list(&lab, 2);
    assert_eq!(own.code, Some(3), "{}", own.stderr);
    assert!(
        own.membership == "unknown" || !own.unreachable.is_empty(),
        "{}",
        own.stderr
    );

    // The link returns: everything converges.
    let back_at = Instant::now();
    lab.reconnect(2);
    let all: BTreeSet<String> = ["v1", "v2", "v3", "v4", "v5"].map(str::to_owned).into();
    for i in [0, 2] {
        wait_until_blocking(
            &format!("vm list on {} to be complete again", HOSTS[i]),
            CONVERGE,
            || {
                let l = list(&lab, i);
                l.code == Some(0) && names(&l) == all
            },
        );
    }
    eprintln!(
        "after the return: vm list complete on lab-a and lab-c after {:?}",
        back_at.elapsed()
    );
    lab.banger_ok(
        2,
        &[
            "vm", "create", "v6", "--image", "demo", "--host", "lab-c", "--wait",
        ],
    );
    let l = list(&lab, 0);
    let ip6 = ip_of(&l, "v6");
    wait_until_blocking("v4 (lab-b) to ping v6 (lab-c)", CONVERGE, || {
        guest_pings(&lab, "v4", &ip6)
    });
    wait_until_blocking("dnsd to serve v6 to lab-c", CONVERGE, || {
        dig(&lab, 2, "v6.lab-c.vm") == ip6
    });
    eprintln!("after the return: converged after {:?}", back_at.elapsed());

    // Service logs written to a file carry no terminal colour codes.
    for (i, host) in HOSTS.iter().enumerate() {
        for svc in ["stord", "netd", "vm-controller"] {
            let log = lab.log_tail(i, svc);
            assert!(!log.is_empty(), "{svc} on {host} logged nothing");
            assert!(
                !log.contains('\x1b'),
                "{svc} on {host} logs colour codes:\n{log}"
            );
        }
    }
    lab.banger_ok(0, &["vm", "delete", "v1", "v2", "v3", "v4", "v5", "v6"]);
    let l = list(&lab, 0);
    assert!(l.vms.is_empty(), "{:?}", l.vms);
    eprintln!("whole documented-lab test {:?}", started.elapsed());
}
