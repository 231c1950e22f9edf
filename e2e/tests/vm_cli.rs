//! `banger vm ...` as a user runs it against the whole local stack (`banger up --vmm sim`):
//! the real vm-controller, stord, netd, dnsd and guest agent, with the Firecracker SIMULATOR
//! in place of the hypervisor (no guest kernel runs; the simulator opens the tap, answers for
//! the guest address and runs the real agent). Runs as root inside a private network
//! namespace, so the host's network is never touched.
//!
//! Needs the workspace binaries: `cargo build --workspace --bins`.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::process::Output;

use banger_e2e::Stack;
use banger_testkit::{have_program, require_root, skip};

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_vm_commands_drive_the_real_controller_from_create_to_delete() {
    if !require_root() {
        return;
    }
    if !have_program("mkfs.ext4") {
        return skip("mkfs.ext4 is not installed (apt-get install e2fsprogs)");
    }
    let stack = Stack::new("vmcli");
    stack.up();
    // `debian` is the controller's default image: creates below name none.
    stack.register_image("debian");

    // Zero cpus never reaches the controller.
    let bad = stack.banger(&["vm", "create", "a", "--cpus", "0"]);
    assert_eq!(bad.status.code(), Some(2), "{}", err(&bad));

    for name in ["a", "b"] {
        let c = stack.banger(&["vm", "create", name, "--memory", "256M", "--wait"]);
        assert!(
            c.status.success(),
            "vm create {name}:\n{}{}",
            out(&c),
            err(&c)
        );
        assert!(
            out(&c).contains(&format!("{name} is healthy")),
            "{}",
            out(&c)
        );
    }

    let list = stack.banger(&["vm", "list", "--json"]);
    assert!(list.status.success(), "{}", err(&list));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let mut running: Vec<&str> = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["state"] == "running")
        .map(|vm| vm["name"].as_str().unwrap())
        .collect();
    running.sort_unstable();
    assert_eq!(running, ["a", "b"]);

    let exec = stack.banger(&["vm", "exec", "a", "--", "sh", "-c", "echo hi; exit 5"]);
    assert_eq!(exec.status.code(), Some(5), "{}", err(&exec));
    assert_eq!(out(&exec), "hi\n");

    let stop = stack.banger(&["vm", "stop", "a", "a", "b", "missing"]);
    assert_eq!(stop.status.code(), Some(3), "{}{}", out(&stop), err(&stop));
    let lines: Vec<String> = out(&stop).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{}", out(&stop));
    assert!(
        lines[0].starts_with("a ") && lines[0].contains("stopped"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("b ") && lines[1].contains("stopped"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("missing ") && lines[2].contains("failed"),
        "{lines:?}"
    );

    let list = stack.banger(&["vm", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|vm| vm["state"] == "stopped"),
        "{v}"
    );

    // set then show: the new size is in the record the controller returns.
    let set = stack.banger(&["vm", "set", "a", "b", "--cpus", "2", "--memory", "512M"]);
    assert_eq!(set.status.code(), Some(0), "{}{}", out(&set), err(&set));
    let show = stack.banger(&["vm", "show", "a", "--json"]);
    assert!(show.status.success(), "{}", err(&show));
    let a: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        (a["cpus"].as_u64(), a["memory_mib"].as_u64()),
        (Some(2), Some(512)),
        "{a}"
    );

    let del = stack.banger(&["vm", "delete", "a", "b"]);
    assert_eq!(del.status.code(), Some(0), "{}{}", out(&del), err(&del));
    let list = stack.banger(&["vm", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["vms"], serde_json::json!([]), "{v}");

    let down = stack.banger(&["down"]);
    assert!(down.status.success(), "{}", err(&down));
}
