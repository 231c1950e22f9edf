//! `banger events` as a user runs it: live events rendered and filtered, and replay of past
//! events from JetStream with `--since`.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_bus::Bus;
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::{HostId, Subjects};
use banger_testkit::{NatsServer, bin_path};

fn event(name: &str, id: &str, kind: EventKind, seq: u64) -> VmEvent {
    banger_e2e::sample_event(name, id, kind, seq)
}

const WEB: &str = "0000000000000000000000000000000a";
const DB: &str = "0000000000000000000000000000000b";

async fn bus(nats: &NatsServer) -> Bus {
    Bus::new(
        async_nats::connect(nats.url()).await.unwrap(),
        Subjects::default(),
    )
}

/// Spawns `banger events ARGS --json` and waits until it says it is watching.
fn spawn_events(nats: &NatsServer, args: &[&str]) -> std::process::Child {
    let mut child = Command::new(bin_path("banger"))
        .args(["--nats-url", &nats.url(), "--json", "events"])
        .args(args)
        .env(
            "BANGER_STATE_DIR",
            std::env::temp_dir().join("banger-events-test-none"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("watching"),
        "unexpected first stderr line: {line:?}"
    );
    child
}

fn events_printed(child: std::process::Child) -> Vec<VmEvent> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "banger events failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn events_prints_only_the_watched_vm_in_order() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let child = spawn_events(&nats, &["--vm", "web", "--count", "2"]);
    nats.wait_for_subscription("banger.events.");
    let host = HostId::new("h1").unwrap();
    bus.publish_event(&host, &event("db", DB, EventKind::Started, 1))
        .await
        .unwrap();
    bus.publish_event(&host, &event("web", WEB, EventKind::Starting, 2))
        .await
        .unwrap();
    bus.publish_event(&host, &event("db", DB, EventKind::Stopped, 3))
        .await
        .unwrap();
    bus.publish_event(&host, &event("web", WEB, EventKind::Started, 4))
        .await
        .unwrap();
    bus.client().flush().await.unwrap();
    let printed = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || events_printed(child)),
    )
    .await
    .expect("banger events --count 2 did not finish")
    .unwrap();
    let seen: Vec<(String, EventKind, u64)> = printed
        .iter()
        .map(|e| (e.vm.name.to_string(), e.kind, e.seq))
        .collect();
    assert_eq!(
        seen,
        [
            ("web".to_owned(), EventKind::Starting, 2),
            ("web".to_owned(), EventKind::Started, 4)
        ]
    );
}

#[tokio::test]
async fn events_since_replays_history_then_follows_live() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    banger_bus::history::ensure_event_stream(&bus)
        .await
        .unwrap();
    let host = HostId::new("h1").unwrap();
    // Published before `banger events` runs: only history can show it.
    bus.publish_event(&host, &event("web", WEB, EventKind::Created, 1))
        .await
        .unwrap();
    bus.client().flush().await.unwrap();

    let child = spawn_events(&nats, &["--since", "5m", "--count", "2"]);
    bus.publish_event(&host, &event("web", WEB, EventKind::Started, 2))
        .await
        .unwrap();
    bus.client().flush().await.unwrap();
    let printed = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || events_printed(child)),
    )
    .await
    .expect("banger events --since did not finish")
    .unwrap();
    let kinds: Vec<EventKind> = printed.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Created, EventKind::Started]);
}

#[tokio::test]
async fn events_since_without_history_says_why() {
    let nats = NatsServer::start();
    let out = Command::new(bin_path("banger"))
        .args(["--nats-url", &nats.url(), "events", "--since", "1m"])
        .env(
            "BANGER_STATE_DIR",
            std::env::temp_dir().join("banger-events-test-none"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("event history is not available"), "{err}");
}

#[test]
fn events_show_a_vm_created_meanwhile_on_a_real_stack() {
    if !banger_testkit::require_root() {
        return;
    }
    let stack = banger_e2e::Stack::new("ev");
    stack.up();
    stack.register_image("demo");

    let mut watcher = stack
        .command()
        .args(["--json", "events", "--vm", "web", "--count", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(watcher.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("watching") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "events exited early");
    }
    // No --wait and nobody asks for health: the `health` event is the controller's own probe
    // of the booted guest's agent (what `vm create --wait` listens for).
    stack.banger_ok(&["vm", "create", "web", "--image", "demo"]);
    let printed = events_printed(watcher);
    let kinds: Vec<EventKind> = printed.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Created,
            EventKind::Starting,
            EventKind::Started,
            EventKind::Health
        ]
    );
    assert!(printed.iter().all(|e| e.vm.name.as_str() == "web"));
    assert!(printed.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(printed[2].vm.network.is_some(), "started carries the lease");
}
