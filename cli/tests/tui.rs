//! `banger tui` outside a terminal: it refuses at once, as a usage error, before touching the
//! bus or the terminal. (The TUI itself is tested in a real terminal by e2e/tests/tui.rs.)

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::process::{Command, Stdio};

#[test]
fn without_a_terminal_the_tui_says_what_to_use_instead() {
    let out = Command::new(banger_testkit::bin_path("banger"))
        // A bus that is not there: the check comes before any connection attempt.
        .args(["--nats-url", "nats://127.0.0.1:9", "tui"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("banger tui needs a terminal"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing drawn: {:?}", out.stdout);
}
