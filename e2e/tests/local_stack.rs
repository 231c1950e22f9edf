//! `banger up` / `banger down` as a user runs them: from nothing to every service answering,
//! on a bus closed to clients without the generated credentials, and back to nothing.
//! Runs inside a private network namespace so the host's network is never touched.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::Path;

use banger_e2e::{Stack, alive, mode, text};
use banger_testkit::require_root;

#[test]
fn up_starts_every_service_on_a_private_bus_and_down_leaves_no_process() {
    if !require_root() {
        return;
    }
    let stack = Stack::new("up");

    let up = stack.banger(&["up", "--vmm", "sim"]);
    assert!(up.status.success(), "banger up failed:\n{}", text(&up));
    assert!(
        text(&up).contains(&format!("banger is up on host {}", stack.host)),
        "{}",
        text(&up)
    );
    assert!(
        text(&up).contains("SIMULATED HYPERVISOR"),
        "the simulator must be announced"
    );

    let stack_file = stack.dir.join("state/stack.toml");
    assert_eq!(
        mode(&stack_file),
        0o600,
        "the credentials file must be root-only"
    );
    assert!(
        std::fs::read_to_string(&stack_file)
            .unwrap()
            .contains("password")
    );

    let status = stack.banger(&["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let mut names: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["host"] == stack.host.as_str())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["dnsd", "netd", "stord", "vm-controller"]);

    // The bus is not open to every local user: no credentials, no connection.
    let url = format!("nats://127.0.0.1:{}", stack.port);
    let anonymous = stack
        .ns
        .block_on(move || async move { async_nats::connect(url).await });
    assert!(
        anonymous.is_err(),
        "an anonymous client was let onto the stack's bus"
    );

    // doctor reports what this machine really has, and exits accordingly.
    let doctor = stack.banger(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let level = |name: &str| -> Vec<String> {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == name)
            .map(|c| c["level"].as_str().unwrap().to_owned())
            .collect()
    };
    let have_fc = banger_testkit::have_program("firecracker");
    let have_kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    assert_eq!(level("firecracker"), [if have_fc { "ok" } else { "fail" }]);
    assert_eq!(level("kvm"), [if have_kvm { "ok" } else { "fail" }]);
    let have_dm = Path::new("/dev/mapper/control").exists();
    assert_eq!(
        level("device-mapper"),
        [if have_dm { "ok" } else { "warn" }]
    );
    assert_eq!(level("nats"), ["ok"]);
    // Storage comes from this host's stord; no image is registered yet, and doctor says so.
    assert_eq!(level("storage").len(), 1, "{report}");
    assert_eq!(level("images"), ["warn"], "{report}");
    assert_eq!(level("service"), ["ok", "ok", "ok", "ok"], "{report}");
    assert_eq!(report["ready"], have_fc && have_kvm);
    assert_eq!(
        doctor.status.code(),
        Some(if have_fc && have_kvm { 0 } else { 1 })
    );

    // A second `up` is a no-op that says so.
    let again = stack.banger(&["up", "--vmm", "sim"]);
    assert!(
        again.status.success() && text(&again).contains("already up"),
        "{}",
        text(&again)
    );

    let pids = stack.pids();
    assert_eq!(
        pids.len(),
        5,
        "four services and nats-server have pid files"
    );
    assert!(pids.iter().all(|p| alive(*p)));

    let down = stack.banger(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    let left: Vec<i32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    assert!(stack.pids().is_empty(), "pid files left after down");

    let after = stack.banger(&["status"]);
    assert_eq!(
        after.status.code(),
        Some(4),
        "status after down: {}",
        text(&after)
    );
    assert!(
        text(&after).contains("banger up"),
        "the error should say how to start the stack"
    );
}

/// Processes whose command line names `dir` (the stack's state and runtime dirs are under it).
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let args = banger_procid::cmdline(pid)?;
            let line = args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            line.contains(&needle).then(|| format!("{pid}: {line}"))
        })
        .collect()
}

#[test]
fn a_failed_up_says_why_and_stops_everything_it_started() {
    if !require_root() {
        return;
    }
    let stack = Stack::new("fup");
    // Something else holds the DNS port the stack's dnsd is configured for, in its namespace.
    let held = stack
        .ns
        .run(|| std::net::UdpSocket::bind("127.0.0.1:42069").unwrap());
    let config = stack.dir.join("banger.toml");
    let config = config.to_string_lossy();
    let up = stack.banger(&["--config", &config, "up", "--vmm", "sim"]);
    assert!(!up.status.success(), "up succeeded on a taken port");
    let out = text(&up);
    assert!(
        out.contains("dnsd exited while starting (exit status: 1)") && out.contains("42069"),
        "the failure names dnsd, its exit status and its log:\n{out}"
    );
    // Nothing this `up` started is left: no process, no pid file.
    banger_testkit::wait_until_blocking(
        "every process the failed up started to be gone",
        std::time::Duration::from_secs(30),
        || processes_naming(&stack.dir).is_empty(),
    );
    let pid_files: Vec<_> = std::fs::read_dir(stack.dir.join("run/stack"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(pid_files.is_empty(), "pid files left: {pid_files:?}");

    // With the port free, the next `up` starts the whole stack: nothing of the failed one
    // holds a port.
    drop(held);
    stack.up();
    assert_eq!(stack.pids().len(), 5, "four services and nats-server");
    let down = stack.banger(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
}
