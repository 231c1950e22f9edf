//! A service's log says why it exits, whatever `RUST_LOG` hides: the real `banger-dnsd` (every
//! service shares this through `banger_bus::runtime`) run at `RUST_LOG=warn`, stopped with
//! SIGTERM by this test, ends its log naming the signal and this test's pid as the sender.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use banger_testkit::{NatsServer, bin_path, free_port};
use common::{DNSD_HOST, config_file};

#[test]
fn a_service_stopped_by_sigterm_logs_who_sent_it_even_at_rust_log_warn() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin_path("banger-dnsd"))
        .arg("--config")
        .arg(config_file(dir.path(), ""))
        .args(["--nats-url", &nats.url(), "--host-id", DNSD_HOST])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    // The first line says it starts, with its pid: visible although RUST_LOG=warn.
    let first = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        first.contains("dnsd starting") && first.contains(&format!("pid={}", child.id())),
        "{first}"
    );
    log.push(first);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    log.extend(lines.try_iter());
    let log = log.join("\n");
    assert!(status.success(), "{status}:\n{log}");
    let me = std::process::id();
    let last = log.lines().last().unwrap();
    assert!(
        last.contains(&format!("dnsd exiting: SIGTERM from pid {me} (")),
        "the last line names the signal and its sender:\n{log}"
    );
}
