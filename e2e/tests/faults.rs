//! Failure as users meet it: services killed with SIGKILL in the middle of a churn of creates
//! and deletes, nats-server killed under a running stack, a guest that ignores CtrlAltDel and a
//! hypervisor that dies on its own. `banger up` brings a broken stack back, and the system
//! converges: no lost or orphaned records, taps, processes; DNS and NAT right.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::time::Duration;

use banger_e2e::{Stack, alive, text};
use banger_testkit::{require_root, wait_until_blocking};

fn vm_names(stack: &Stack) -> Vec<(String, String)> {
    let out = stack.banger_ok(&["--json", "vm", "list"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            (
                vm["name"].as_str().unwrap().to_owned(),
                vm["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ip_of(stack: &Stack, name: &str) -> String {
    let out = stack.banger_ok(&["--json", "vm", "show", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vm = if v["vm"].is_object() { &v["vm"] } else { &v };
    vm["network"]["ip"].as_str().unwrap().to_owned()
}

fn dig_short(stack: &Stack, name: &str) -> String {
    let out = stack
        .ns
        .command("dig")
        .args([
            "@127.0.0.1",
            "-p",
            "42069",
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

/// Simulator processes (named `banger-fcsim`: not the guest's init, whose arguments name the
/// simulator's guest directory) whose command line mentions this stack's directory.
fn simulators(stack: &Stack) -> usize {
    let dir = stack.dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "banger-fcsim")
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&dir))
        })
        .count()
}

fn kill9(pid: i32) {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_until_blocking("the killed process to die", Duration::from_secs(10), || {
        !alive(pid)
    });
}

/// The end state every scenario must reach: only `keep` exists and runs, resolves, answers
/// ping, has the only tap and the only simulator process; the VM subnet is masqueraded.
fn assert_converged(stack: &Stack) {
    wait_until_blocking(
        "only `keep` to remain, running",
        Duration::from_secs(30),
        || vm_names(stack) == [("keep".to_owned(), "running".to_owned())],
    );
    let ip = ip_of(stack, "keep");
    wait_until_blocking("keep.vm to resolve", Duration::from_secs(40), || {
        dig_short(stack, "keep.vm") == ip
    });
    assert!(
        stack
            .ns
            .try_exec(&["ping", "-c", "1", "-W", "2", ip.as_str()]),
        "keep ({ip}) does not answer ping"
    );
    wait_until_blocking("one tap, keep's", Duration::from_secs(30), || {
        stack.taps().len() == 1
    });
    assert_eq!(simulators(stack), 1, "simulator processes besides keep's");
    let nft = stack.ns.exec(&["nft", "list", "table", "ip", "banger"]);
    assert!(nft.contains("masquerade"), "NAT rule missing:\n{nft}");
}

#[test]
fn killed_services_and_nats_come_back_and_the_system_converges() {
    if !require_root() {
        return;
    }
    let mut stack = Stack::new("flt");
    // A guest that ignores CtrlAltDel, selected by name through the simulator's fault switch
    // (inherited by the services `banger up` starts, and by the simulators they spawn).
    stack.env("BANGER_FCSIM_FAULTS", "stubborn=ignore-ctrl-alt-del");
    stack.up();
    stack.register_image("demo");
    stack.banger_ok(&["vm", "create", "keep", "--image", "demo"]);

    for (round, service) in ["stord", "netd", "dnsd", "vm-controller", "nats-server"]
        .into_iter()
        .enumerate()
    {
        let name = format!("churn{round}");
        // A create in flight while the service dies: it may fail (then it must say so and
        // leave a failed record or nothing), or succeed.
        let mut create = stack.command();
        create.args(["vm", "create", &name, "--image", "demo"]);
        let child = create
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        kill9(stack.pid_of(service).unwrap());
        let created = child.wait_with_output().unwrap();
        if !created.status.success() {
            assert!(
                !text(&created).trim().is_empty(),
                "a failed create must say why"
            );
        }
        // `banger up` repairs the stack: only the missing process starts again.
        let up = stack.banger(&["up", "--vmm", "sim"]);
        assert!(up.status.success(), "repairing up failed:\n{}", text(&up));
        assert!(stack.pid_of(service).is_some_and(alive));
        // Whatever became of the churn VM, a delete removes it (or it never existed).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while vm_names(&stack).iter().any(|(n, _)| *n == name) {
            let del = stack.banger(&["vm", "delete", &name]);
            if del.status.success() {
                break;
            }
            let last = text(&del);
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} ({service}): {name} cannot be deleted: {last}\nvms: {:?}",
                vm_names(&stack)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_converged(&stack);
    }

    // A hypervisor that dies on its own: the controller notices and the VM becomes stopped,
    // its tap and record follow; starting it again works.
    stack.banger_ok(&["vm", "create", "crash", "--image", "demo"]);
    let dir = stack.dir.to_string_lossy().into_owned();
    let crash_pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("banger-fcsim") && c.contains(&dir) && c.contains("--id\0crash\0")
                })
                .unwrap_or(false)
        })
        .expect("the simulator process of `crash`");
    kill9(crash_pid);
    wait_until_blocking(
        "the controller to see the dead hypervisor",
        Duration::from_secs(60),
        || {
            vm_names(&stack)
                .iter()
                .any(|(n, s)| n == "crash" && (s == "stopped" || s == "failed"))
        },
    );
    stack.banger_ok(&["vm", "start", "crash"]);
    stack.banger_ok(&["vm", "delete", "crash"]);
    assert_converged(&stack);

    // A guest that ignores CtrlAltDel is stopped by force after the grace window, and the
    // command says so.
    stack.banger_ok(&["vm", "create", "stubborn", "--image", "demo"]);
    let stop = stack.banger_ok(&["vm", "stop", "stubborn"]);
    assert!(
        stop.to_lowercase().contains("force") || stop.to_lowercase().contains("ctrl"),
        "the stop reply should say the guest was stopped by force: {stop}"
    );
    assert!(
        vm_names(&stack)
            .iter()
            .any(|(n, s)| n == "stubborn" && s == "stopped")
    );
    stack.banger_ok(&["vm", "delete", "stubborn"]);
    assert_converged(&stack);
}
