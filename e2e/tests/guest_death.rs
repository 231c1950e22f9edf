//! A dead guest is reported, not waited out; a dead hypervisor says how it died.
//!
//! - An image whose agent cannot run (a dynamically linked agent without its loader and C
//!   library: `chroot` exits 127): the simulator prints the kernel's `Attempted to kill init!`
//!   panic on the console, and `vm create --wait`, `vm health` and `vm show` give the exit
//!   status, the hint and the console's last lines, long before the wait's deadline; the
//!   VM is `failed` with no hypervisor and no tap left.
//! - A hypervisor that exits on its own (fault `crash-after`: the simulator exits 1): the VM is
//!   `failed`, and its reason carries the exit status and the last error line of its log.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::process::Command;
use std::time::Duration;

use banger_e2e::{Stack, text};
use banger_testkit::{bin_path, require_root, wait_until_blocking};

/// Far beyond what reporting a dead guest takes: a `--wait` that ran into it would fail with a
/// timeout, not with the reason.
const WAIT_TIMEOUT: &str = "60";

/// The VM's JSON record.
fn show(stack: &Stack, name: &str) -> serde_json::Value {
    let out = stack.banger_ok(&["--json", "vm", "show", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.get("vm").cloned().unwrap_or(v)
}

/// Registers `name`: a root drive holding only the agent binary (no loader, no libc).
fn register_agent_without_libraries(stack: &Stack, name: &str) {
    let dir = stack.dir.join("image").join(name);
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("usr/local/bin")).unwrap();
    std::fs::copy(
        bin_path("banger-agent"),
        tree.join("usr/local/bin/banger-agent"),
    )
    .unwrap();
    let (kernel, rootfs) = banger_e2e::stand_in_image_files(&dir);
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&rootfs)
        .arg("32M")
        .output()
        .unwrap();
    assert!(made.status.success(), "mkfs.ext4: {}", text(&made));
    stack.banger_ok(&[
        "image",
        "register",
        name,
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
}

#[test]
fn a_guest_whose_agent_cannot_run_is_reported_with_its_exit_status_not_waited_out() {
    if !require_root() {
        return;
    }
    let stack = Stack::new("gdie");
    stack.up();
    register_agent_without_libraries(&stack, "nolibs");

    let create = stack.banger(&[
        "vm",
        "create",
        "broken",
        "--image",
        "nolibs",
        "--wait",
        "--wait-timeout",
        WAIT_TIMEOUT,
    ]);
    let out = text(&create);
    assert_eq!(create.status.code(), Some(1), "{out}");
    assert!(
        !out.contains("did not become healthy within"),
        "waited out:\n{out}"
    );
    for needed in [
        "broken is failed",
        "exit status 127",
        "loader/libraries are missing from the image",
        // The console's tail: what the guest's init said, and the panic.
        "banger-fcsim-init: cannot run /usr/local/bin/banger-agent: No such file or directory",
        "its loader or a library it needs is missing",
        "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00",
    ] {
        assert!(out.contains(needed), "the create lacks {needed:?}:\n{out}");
    }

    let vm = show(&stack, "broken");
    assert_eq!(vm["state"], "failed", "{vm}");
    let reason = vm["reason"].as_str().unwrap();
    assert!(reason.contains("exit status 127"), "{reason}");
    assert!(reason.contains("[SIMULATED GUEST]"), "{reason}");
    let human = stack.banger_ok(&["vm", "show", "broken"]);
    assert!(human.contains("exit status 127"), "{human}");
    let health = stack.banger(&["vm", "health", "broken"]);
    assert!(!health.status.success());
    assert!(
        text(&health).contains("exit status 127"),
        "{}",
        text(&health)
    );

    // Nothing of it runs: no hypervisor, no tap.
    let dir = stack.dir.to_string_lossy().into_owned();
    let hypervisors = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("banger-fcsim") && c.contains(&dir) && banger_e2e::alive(*pid)
            })
        })
        .count();
    assert_eq!(hypervisors, 0, "the dead guest's hypervisor still runs");
    assert!(stack.taps().is_empty(), "taps left: {:?}", stack.taps());

    // Fixed image or not, the VM can be deleted.
    stack.banger_ok(&["vm", "delete", "broken"]);
}

#[test]
fn a_hypervisor_that_exits_on_its_own_leaves_its_exit_status_and_last_error() {
    if !require_root() {
        return;
    }
    let mut stack = Stack::new("hdie");
    stack.env("BANGER_FCSIM_FAULTS", "crashy=crash-after=1500");
    stack.up();
    stack.register_image("demo");
    stack.banger_ok(&["vm", "create", "crashy", "--image", "demo"]);
    wait_until_blocking(
        "the controller to report the dead hypervisor",
        Duration::from_secs(30),
        || show(&stack, "crashy")["state"] == "failed",
    );
    let vm = show(&stack, "crashy");
    let reason = vm["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the hypervisor exited on its own (exit status: 1)"),
        "{reason}"
    );
    assert!(
        reason.contains("its log's last error:") && reason.contains("crash-after"),
        "{reason}"
    );
    assert!(stack.taps().is_empty(), "taps left: {:?}", stack.taps());
    // A failed VM starts again.
    stack.banger_ok(&["vm", "delete", "crashy"]);
}
