//! Bad settings stop the real `banger-dnsd` binary at start-up with a message naming what is
//! wrong and a failure exit status, before it waits for NATS: an unparseable listener address,
//! an address that is not local, a port already taken, an empty listener list, a typo'd key.
//! The bus URL points at a port nobody listens on: without the check dnsd would sit retrying
//! it, so each exit (and its message) is the settings' doing.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_testkit::{bin_path, free_port, wait_until_blocking};
use common::config_file;

/// A NATS URL nobody answers: dnsd would retry it forever, so an exit proves the check ran
/// first.
fn dead_nats() -> String {
    format!("nats://127.0.0.1:{}", free_port())
}

fn dnsd(dir: &Path, dnsd_table: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin_path("banger-dnsd"));
    cmd.arg("--config")
        .arg(config_file(dir, dnsd_table))
        .args(["--nats-url", &dead_nats(), "--host-id", "dnshost"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .args(extra)
        .env("RUST_LOG", "off")
        .env_remove("BANGER_DNSD_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs dnsd and returns (exit code, stderr); fails the test if it does not exit.
fn run_to_exit(dnsd_table: &str, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = dnsd(dir.path(), dnsd_table, extra).spawn().unwrap();
    let mut status = None;
    wait_until_blocking("dnsd to exit", Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.unwrap().code().unwrap_or(-1), err)
}

#[test]
fn a_listener_that_is_not_an_address_is_a_clear_error() {
    let (code, err) = run_to_exit("listen = ['localhost']", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("[dnsd]") && err.contains("socket address"),
        "{err}"
    );

    // The same through the flag: clap's usage error (status 2) names the flag.
    let (code, err) = run_to_exit("", &["--listen", "127.0.0.1:notaport"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn a_listener_that_cannot_be_bound_is_a_clear_error() {
    // TEST-NET-1: never a local address.
    let (code, err) = run_to_exit("listen = ['192.0.2.1:53']", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("binding UDP 192.0.2.1:53"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run_to_exit("", &["--listen", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("binding TCP {addr}")), "{err}");
}

#[test]
fn empty_listeners_bad_values_and_unknown_keys_are_clear_errors() {
    for (table, needle) in [
        ("listen = []", "listen must name at least one address"),
        ("ttl_secs = 999999", "ttl_secs"),
        ("rebuild_interval_secs = 0", "rebuild_interval_secs"),
        ("ns_name = 'a..b'", "ns_name"),
        ("tll_secs = 5", "tll_secs"),
    ] {
        let (code, err) = run_to_exit(table, &[]);
        assert_eq!(code, 1, "{table}: {err}");
        assert!(err.contains(needle), "{table}: {err}");
    }
}
