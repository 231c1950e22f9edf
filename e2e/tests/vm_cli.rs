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

#[test]
fn one_create_makes_many_vms_at_once_and_names_each_failure() {
    if !require_root() {
        return;
    }
    if !have_program("mkfs.ext4") {
        return skip("mkfs.ext4 is not installed (apt-get install e2fsprogs)");
    }
    let stack = Stack::new("vmmany");
    stack.up();
    stack.register_image("debian");
    let names = |vms: &serde_json::Value| -> Vec<String> {
        let mut n: Vec<String> = vms["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| vm["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort_unstable();
        n
    };
    let list = || -> serde_json::Value {
        let l = stack.banger(&["vm", "list", "--json"]);
        assert!(l.status.success(), "{}", err(&l));
        serde_json::from_slice(&l.stdout).unwrap()
    };

    // One bad name refuses the whole command, naming every bad one: nothing is created.
    let bad = stack.banger(&["vm", "create", "w-1", "W-2", "w-1", "--no-start"]);
    assert_eq!(bad.status.code(), Some(2), "{}{}", out(&bad), err(&bad));
    assert!(err(&bad).contains("\"W-2\""), "{}", err(&bad));
    assert!(
        err(&bad).contains("\"w-1\" is given twice"),
        "{}",
        err(&bad)
    );
    assert!(names(&list()).is_empty(), "{:?}", names(&list()));

    // A taken name fails in its place; the others are created.
    stack.banger_ok(&["vm", "create", "w-2", "--no-start"]);
    let many: Vec<String> = (1..=8).map(|i| format!("w-{i}")).collect();
    let mut args = vec!["vm", "create"];
    args.extend(many.iter().map(String::as_str));
    args.push("--no-start");
    let made = stack.banger(&args);
    assert_eq!(made.status.code(), Some(3), "{}{}", out(&made), err(&made));
    let lines: Vec<String> = out(&made).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 8, "{}", out(&made));
    for (line, name) in lines.iter().zip(&many) {
        assert!(line.starts_with(&format!("{name} ")), "{line}");
        if name == "w-2" {
            assert!(
                line.contains("failed:") && line.contains("(conflict)"),
                "{line}"
            );
        } else {
            assert!(
                line.contains("created on") && line.contains("stopped"),
                "{line}"
            );
        }
    }
    assert!(
        err(&made).contains("1 of 8 targets failed"),
        "{}",
        err(&made)
    );
    assert_eq!(names(&list()), many);

    // Started together, they all run, each with an address of its own.
    let mut start = vec!["vm", "start"];
    start.extend(many.iter().map(String::as_str));
    stack.banger_ok(&start);
    let vms = list();
    let mut ips: Vec<&str> = vms["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            assert_eq!(vm["state"], "running", "{vm}");
            vm["network"]["ip"].as_str().unwrap()
        })
        .collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), many.len(), "{ips:?}");

    // Created and booted together, waiting for every guest agent, as JSON.
    let waited = stack.banger(&["--json", "vm", "create", "x-1", "x-2", "x-3", "--wait"]);
    assert!(waited.status.success(), "{}{}", out(&waited), err(&waited));
    let v: serde_json::Value = serde_json::from_slice(&waited.stdout).unwrap();
    let got: Vec<(&str, bool, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap(),
                o["ok"].as_bool().unwrap(),
                o["health"]["status"].as_str().unwrap_or("none"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("x-1", true, "ok"),
            ("x-2", true, "ok"),
            ("x-3", true, "ok")
        ]
    );

    let mut delete = vec!["vm", "delete", "x-1", "x-2", "x-3"];
    delete.extend(many.iter().map(String::as_str));
    stack.banger_ok(&delete);
    assert!(names(&list()).is_empty());
    assert!(stack.taps().is_empty(), "{:?}", stack.taps());
}
