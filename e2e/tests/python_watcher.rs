//! A client banger did not write — the Python `nats-py` client from PyPI, standing in for
//! `nats sub 'banger.events.>'` — watches a real stack and sees every transition of every VM,
//! in order, with the documented JSON fields and a W3C `traceparent` header.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use banger_e2e::Stack;
use banger_testkit::{require_root, skip};

#[test]
fn nats_py_sees_every_transition_of_every_vm_in_order() {
    if !require_root() {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = repo.join(".venv-e2e/bin/python");
    if !python.exists() {
        return skip("nats-py is not installed in .venv-e2e: run ./scripts/setup");
    }
    let stack = Stack::new("py");
    stack.up();
    stack.register_image("demo");

    let mut watcher = stack
        .ns
        .command(python.to_str().unwrap())
        .arg(repo.join("e2e/py/watch_events.py"))
        .arg(stack.state_dir().join("stack.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(watcher.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the watcher did not start: {line}");
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&l).unwrap()).is_err() {
                break;
            }
        }
    });

    stack.banger_ok(&["vm", "create", "one", "--image", "demo"]);
    stack.banger_ok(&["vm", "create", "two", "--image", "demo"]);
    stack.banger_ok(&["vm", "stop", "one"]);
    stack.banger_ok(&["vm", "delete", "one", "two"]);

    // Collect until both VMs are reported deleted.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let mut deleted = 0;
    while deleted < 2 {
        let e = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("events stopped arriving; seen so far: {seen:#?}"));
        if e["data"]["kind"] == "deleted" {
            deleted += 1;
        }
        seen.push(e);
    }
    let _ = watcher.kill();
    let _ = watcher.wait();

    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last_seq = 0;
    for e in &seen {
        let data = &e["data"];
        // The documented fields of every event.
        for field in ["kind", "at_ms", "seq", "vm"] {
            assert!(!data[field].is_null(), "event without {field}: {e}");
        }
        for field in ["id", "name", "host", "state", "image", "cpus", "memory_mib"] {
            assert!(
                !data["vm"][field].is_null(),
                "vm snapshot without {field}: {e}"
            );
        }
        let subject = format!(
            "banger.events.{}.vm.{}.{}",
            data["vm"]["host"].as_str().unwrap(),
            data["vm"]["id"].as_str().unwrap(),
            data["kind"].as_str().unwrap()
        );
        assert_eq!(e["subject"], subject.as_str());
        let traceparent = e["headers"]["traceparent"].as_str().unwrap_or_default();
        assert!(
            traceparent.starts_with("00-") && traceparent.len() == 55,
            "no W3C traceparent on {subject}: {e}"
        );
        // One host: its sequence numbers increase with every event, in delivery order.
        let seq = data["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "out of order: seq {seq} after {last_seq}");
        last_seq = seq;
        kinds
            .entry(data["vm"]["name"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["kind"].as_str().unwrap().to_owned());
    }
    let expected_one = [
        "created", "starting", "started", "stopping", "stopped", "deleted",
    ];
    let expected_two = [
        "created", "starting", "started", "stopping", "stopped", "deleted",
    ];
    let without_health =
        |v: &Vec<String>| -> Vec<String> { v.iter().filter(|k| *k != "health").cloned().collect() };
    assert_eq!(without_health(&kinds["one"]), expected_one, "{seen:#?}");
    assert_eq!(without_health(&kinds["two"]), expected_two, "{seen:#?}");
}
