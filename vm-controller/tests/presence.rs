//! What `vm.list` answers carry besides the VMs: only the VMs the request's refs could name,
//! and who is there (the controllers' heartbeats in their JetStream bucket, the lab's
//! members). A real nats-server with JetStream, a real SQLite database, the controller's
//! doubles for its other peers.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::time::Duration;

use banger_bus::Bus;
use banger_bus::lab::BucketRead;
use banger_bus::shutdown::CancellationToken;
use banger_proto::HostId;
use banger_proto::vm::{ControllerBeat, ListVmsReply, ListVmsRequest, controller_bucket};
use banger_vm_controller::presence::{self, MAX_AGE, Presence};
use common::Harness;

/// Generous: a loaded machine, and JetStream's expiry runs on its own timer.
const PATIENCE: Duration = Duration::from_secs(30);

async fn list(bus: &Bus, refs: &[&str]) -> ListVmsReply {
    bus.request(
        bus.subjects().vm_list(),
        &ListVmsRequest::matching(refs.iter().copied()),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

async fn names(bus: &Bus, refs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list(bus, refs)
        .await
        .vms
        .into_iter()
        .map(|v| v.name.to_string())
        .collect();
    v.sort();
    v
}

/// The hosts with a live key in the controllers bucket.
async fn beating(bus: &Bus) -> Vec<String> {
    let bucket = controller_bucket(bus.subjects().prefix());
    match banger_bus::lab::read_bucket(bus, &bucket, Duration::from_secs(5)).await {
        BucketRead::Values(values) => values
            .iter()
            .map(|v| {
                serde_json::from_slice::<ControllerBeat>(v)
                    .unwrap()
                    .host
                    .to_string()
            })
            .collect(),
        BucketRead::Absent => Vec::new(),
        BucketRead::Unknown => panic!("the controllers bucket could not be read"),
    }
}

async fn wait_beating(bus: &Bus, what: &str, want: bool, host: &str) {
    banger_testkit::wait_until(what, PATIENCE, || {
        let bus = bus.clone();
        let host = host.to_owned();
        async move { beating(&bus).await.contains(&host) == want }
    })
    .await;
}

#[tokio::test]
async fn the_refs_filter_keeps_names_ids_and_id_prefixes_only() {
    let h = Harness::start().await;
    let web = h.create("web").await;
    let web2 = h.create("web2").await;
    let db = h.create("db").await;
    assert_eq!(names(&h.bus, &[]).await, ["db", "web", "web2"]);
    // A name is matched whole: `web` is not `web2`.
    assert_eq!(names(&h.bus, &["web"]).await, ["web"]);
    // A full id, and a prefix of one.
    assert_eq!(names(&h.bus, &[db.id.as_str()]).await, ["db"]);
    assert_eq!(names(&h.bus, &[&web2.id.as_str()[..12]]).await, ["web2"]);
    // Several refs: the union.
    assert_eq!(
        names(&h.bus, &["db", &web.id.as_str()[..16], "nope"]).await,
        ["db", "web"]
    );
    // Nothing matches: an empty answer, not an error; an empty ref names nothing.
    assert!(names(&h.bus, &["nope"]).await.is_empty());
    assert!(names(&h.bus, &[""]).await.is_empty());
    // Not a filter on the host: the answer is still this host's, with its hypervisor.
    let reply = list(&h.bus, &["nope"]).await;
    assert_eq!(reply.host, h.host());
    assert!(reply.vmm.is_some());
}

#[tokio::test]
async fn a_running_controller_beats_names_itself_and_a_clean_stop_deletes_its_key() {
    let mut h = Harness::start().await;
    wait_beating(&h.bus, "h1's heartbeat", true, "h1").await;
    // Its answers name the live controllers (itself) and the lab's members (none: netd has
    // claimed no subnet, so this is no lab).
    let bus = h.bus.clone();
    banger_testkit::wait_until("vm.list to carry peers", PATIENCE, || {
        let bus = bus.clone();
        async move {
            let r = list(&bus, &[]).await;
            r.peers == Some(vec!["h1".to_owned()]) && r.members == Some(vec![])
        }
    })
    .await;
    // Another controller's heartbeat shows up in h1's answers.
    let stop_other = CancellationToken::new();
    let other = tokio::spawn(presence::run(
        h.bus.clone(),
        HostId::new("h7").unwrap(),
        "sim",
        Presence::default(),
        stop_other.clone(),
    ));
    banger_testkit::wait_until("h1 to name h7 as a peer", PATIENCE, || {
        let bus = bus.clone();
        async move { list(&bus, &[]).await.peers == Some(vec!["h1".to_owned(), "h7".to_owned()]) }
    })
    .await;
    stop_other.cancel();
    other.await.unwrap();
    // A clean stop deletes the key: gone well before it could have expired.
    assert!(!beating(&h.bus).await.contains(&"h7".to_owned()));
    h.stop_controller().await;
    assert_eq!(beating(&h.bus).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_killed_controllers_beat_expires_after_max_age() {
    let h = Harness::start().await;
    let beats = tokio::spawn(presence::run(
        h.bus.clone(),
        HostId::new("h9").unwrap(),
        "firecracker",
        Presence::default(),
        CancellationToken::new(),
    ));
    wait_beating(&h.bus, "h9's heartbeat", true, "h9").await;
    // Killed: no clean stop, nothing deletes the key.
    beats.abort();
    let _ = beats.await;
    let killed_at = std::time::Instant::now();
    wait_beating(&h.bus, "h9's heartbeat to expire", false, "h9").await;
    // It went because it expired, not because something deleted it early.
    assert!(
        killed_at.elapsed() + presence::BEAT >= MAX_AGE,
        "h9's key vanished {:?} after the kill, before max_age {MAX_AGE:?} could pass",
        killed_at.elapsed()
    );
    // The controller that still beats is unaffected.
    assert!(beating(&h.bus).await.contains(&"h1".to_owned()));
}
