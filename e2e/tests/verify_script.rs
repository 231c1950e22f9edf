//! `scripts/verify.sh`, the live smoke test for real hosts, run the way CI exercises it:
//! against a stack on the simulator. It passes on a healthy VM, and when the boot deadline
//! passes it fails with everything needed to diagnose: VM metadata, logs, tap, sockets, NAT.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::Path;
use std::process::Output;

use banger_e2e::{Stack, text};
use banger_testkit::{bin_path, require_root};

fn verify(stack: &Stack, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify.sh");
    stack
        .ns
        .command("bash")
        .arg(script)
        .args(args)
        .env("BANGER", bin_path("banger"))
        .env("BANGER_STATE_DIR", stack.state_dir())
        .env("BANGER_RUNTIME_DIR", stack.dir.join("run"))
        .env(
            "BANGER_NATS_URL",
            format!("nats://127.0.0.1:{}", stack.port),
        )
        .env("BANGER_HOST_ID", &stack.host)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn verify_passes_on_a_healthy_vm_and_explains_a_missed_deadline() {
    if !require_root() {
        return;
    }
    let mut stack = Stack::new("vfy");
    // One VM name boots slower than any deadline the test gives it.
    stack.env("BANGER_FCSIM_FAULTS", "verify-slow=slow-boot=60000");
    stack.up();
    stack.register_image("demo");

    let ok = verify(
        &stack,
        &["--image", "demo", "--login", "exec", "--deadline", "60"],
    );
    let out = text(&ok);
    assert!(ok.status.success(), "verify failed on a healthy VM:\n{out}");
    assert!(out.contains("verify: OK"), "{out}");
    assert!(out.contains("inside: Linux"), "{out}");

    let slow = verify(
        &stack,
        &[
            "--image",
            "demo",
            "--name",
            "verify-slow",
            "--login",
            "exec",
            "--deadline",
            "4",
        ],
    );
    let out = text(&slow);
    assert_eq!(slow.status.code(), Some(1), "{out}");
    for section in [
        "FAILED: verify-slow was not ready within 4s",
        "---- VM metadata",
        "\"name\": \"verify-slow\"",
        "---- serial log",
        "SIMULATED",
        "---- tap state (bgr",
        "---- socket state",
        "api.sock",
        "---- NAT rules",
        "masquerade",
    ] {
        assert!(out.contains(section), "the dump lacks {section:?}:\n{out}");
    }
    // Both runs deleted their VM.
    let list = stack.banger_ok(&["--json", "vm", "list"]);
    assert!(!list.contains("verify-"), "verify left a VM behind: {list}");
}
