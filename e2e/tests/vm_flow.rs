//! The whole product as a user drives it, with the simulator as the only stand-in: `banger up`,
//! register an image, create three VMs, resolve them with `dig`, ping them, run commands in
//! them, keep a file on the work disk across stop/start, batch-stop with a missing and a
//! repeated ref, delete everything, `banger down` — and nothing is left behind.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use banger_e2e::{Stack, alive, processes_mentioning, text};
use banger_testkit::{require_root, wait_until_blocking};

fn vm_list(stack: &Stack) -> Vec<serde_json::Value> {
    let out = stack.banger_ok(&["--json", "vm", "list"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["vms"]
        .as_array()
        .or_else(|| v.as_array())
        .unwrap_or_else(|| panic!("unexpected vm list --json: {v}"))
        .clone()
}

fn ip_of(stack: &Stack, name: &str) -> String {
    vm_list(stack)
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["network"]["ip"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} has no address in vm list"))
}

fn state_of(stack: &Stack, name: &str) -> Option<String> {
    vm_list(stack)
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["state"].as_str().map(str::to_owned))
}

/// The `+short` answer of `dig NAME A` against dnsd, and the full answer for messages.
fn dig(stack: &Stack, name: &str) -> (String, String) {
    let run = |extra: &[&str]| {
        let out = stack
            .ns
            .command("dig")
            .args(["@127.0.0.1", "-p", "42069", "+tries=1", "+time=2"])
            .args(extra)
            .args([name, "A"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    (run(&["+short"]), run(&[]))
}

fn loops_under(dir: &std::path::Path) -> Vec<String> {
    let out = Command::new("losetup").arg("-a").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_user_session_from_up_to_down_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let stack = Stack::new("flow");
    stack.up();
    stack.register_image("demo");

    let names = ["alpha", "bravo", "charlie"];
    for name in names {
        stack.banger_ok(&["vm", "create", name, "--image", "demo", "--wait"]);
    }
    for name in names {
        assert_eq!(state_of(&stack, name).as_deref(), Some("running"));
        let ip = ip_of(&stack, name);
        // DNS: the name answers with the VM's address.
        let (answer, full) = dig(&stack, &format!("{name}.vm"));
        assert_eq!(answer, ip, "dig {name}.vm:\n{full}");
        // The guest answers on its address.
        assert!(
            stack
                .ns
                .try_exec(&["ping", "-c", "1", "-W", "2", ip.as_str()]),
            "{name} ({ip}) does not answer ping"
        );
        // Commands run inside, through the agent.
        let out = stack.banger_ok(&["vm", "exec", name, "--", "uname", "-s"]);
        assert_eq!(out.trim(), "Linux");
        // The guest is named after the VM (the `ip=` boot argument's hostname field).
        let out = stack.banger_ok(&["vm", "exec", name, "--", "uname", "-n"]);
        assert_eq!(out.trim(), name);
    }

    // Stats join the hypervisor's process, its own metrics and the guest agent's view.
    let stats: serde_json::Value =
        serde_json::from_str(&stack.banger_ok(&["--json", "vm", "stats", "alpha"])).unwrap();
    assert!(
        stats["vmm_rss_bytes"].as_u64().is_some_and(|b| b > 0),
        "{stats}"
    );
    assert!(
        stats["vmm_metrics"]["utc_timestamp_ms"].as_u64().is_some(),
        "no hypervisor metrics: {stats}"
    );
    assert_eq!(stats["guest"]["status"], "ok", "{stats}");

    // The work disk keeps its files across stop and start.
    stack.banger_ok(&[
        "vm",
        "exec",
        "alpha",
        "--",
        "sh",
        "-c",
        "echo kept > /root/note",
    ]);
    stack.banger_ok(&["vm", "stop", "alpha"]);
    assert_eq!(state_of(&stack, "alpha").as_deref(), Some("stopped"));
    let (answer, _) = dig(&stack, "alpha.vm");
    assert!(answer.is_empty(), "a stopped VM still resolves: {answer}");
    stack.banger_ok(&["vm", "start", "alpha"]);
    // `vm start` returns when the VM runs; the agent needs its moment (on a loaded machine,
    // longer than a CLI round trip).
    wait_until_blocking("alpha's agent after start", Duration::from_secs(30), || {
        stack.banger(&["vm", "health", "alpha"]).status.success()
    });
    let out = stack.banger_ok(&["vm", "exec", "alpha", "--", "cat", "/root/note"]);
    assert_eq!(out.trim(), "kept");

    // A batch with a repeated and a missing ref: the valid ones run once each, in order, the
    // missing one is reported, and the exit code says not everything worked.
    let batch = stack.banger(&["vm", "stop", "alpha", "alpha", "bravo", "missing"]);
    assert!(!batch.status.success(), "{}", text(&batch));
    let out = text(&batch);
    assert!(out.contains("missing"), "{out}");
    let alpha_at = out.find("alpha").unwrap();
    let bravo_at = out.find("bravo").unwrap();
    assert!(alpha_at < bravo_at, "results out of order:\n{out}");
    assert_eq!(
        out.matches("alpha").count(),
        1,
        "alpha handled twice:\n{out}"
    );
    assert_eq!(state_of(&stack, "alpha").as_deref(), Some("stopped"));
    assert_eq!(state_of(&stack, "bravo").as_deref(), Some("stopped"));
    assert_eq!(state_of(&stack, "charlie").as_deref(), Some("running"));

    stack.banger_ok(&["vm", "delete", "alpha", "bravo", "charlie"]);
    assert!(vm_list(&stack).is_empty());
    let (answer, _) = dig(&stack, "charlie.vm");
    assert!(answer.is_empty(), "a deleted VM still resolves: {answer}");
    assert!(stack.taps().is_empty(), "taps left: {:?}", stack.taps());

    // Records: no VM (checked above), no lease or tap left in netd.
    let status: serde_json::Value =
        serde_json::from_str(&stack.banger_ok(&["--json", "status"])).unwrap();
    let net = &status["networks"][stack.host.as_str()];
    assert_eq!(net["leases"], 0, "leases left: {status}");
    assert_eq!(net["taps"], 0, "taps left: {status}");

    let pids = stack.pids();
    stack.banger_ok(&["down"]);
    let left: Vec<i32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    assert!(stack.taps().is_empty());
    assert!(
        !stack.ns.try_exec(&["nft", "list", "table", "ip", "banger"]),
        "banger's nftables table left after down"
    );
    assert!(loops_under(&stack.dir).is_empty(), "loop devices left");
    // Each simulated guest's network namespace lives only as long as its simulator and agent:
    // no process of the stack means no namespace, no agent, no hypervisor.
    let strays = processes_mentioning(&stack.dir);
    assert!(strays.is_empty(), "processes left: {strays:#?}");
    let run: PathBuf = stack.dir.join("run");
    let sockets: Vec<_> = walk(&run)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    assert!(sockets.is_empty(), "sockets left: {sockets:?}");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
