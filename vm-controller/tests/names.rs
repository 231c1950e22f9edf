//! The lab's name directory on a real nats-server with JetStream: a name is created only if
//! absent, so two hosts racing for it cannot both win; a live host keeps its names, a host
//! whose controller is gone loses them to the next claim; a delete gives a name back; a sync
//! writes what is missing and removes what is stale. The hosts' liveness is their heartbeat
//! key, written here with the controller's own heartbeat code.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::heartbeat::Heartbeat;
use banger_proto::op::vm;
use banger_proto::vm::{NameEntry, controller_bucket, name_bucket};
use banger_proto::{ErrorCode, HostId, VmId, VmName};
use banger_testkit::NatsServer;
use banger_vm_controller::deps::BusLab;
use banger_vm_controller::ids::new_vm_id;
use banger_vm_controller::names::{Claim, NameDirectory, SyncReport};
use banger_vm_controller::presence::MAX_AGE;
use common::{Fakes, Harness, create_request, test_config};

fn host(h: &str) -> HostId {
    HostId::new(h).unwrap()
}

fn name(n: &str) -> VmName {
    VmName::new(n).unwrap()
}

async fn bus(nats: &NatsServer) -> Bus {
    let client = async_nats::connect(nats.url()).await.unwrap();
    Bus::new(client, banger_proto::Subjects::default())
}

/// Makes `h`'s controller look alive: its key in the heartbeat bucket.
async fn beat(bus: &Bus, h: &str) -> Heartbeat {
    let bucket = controller_bucket(bus.subjects().prefix());
    let hb = Heartbeat::open(bus, &bucket, h, MAX_AGE).await.unwrap();
    hb.beat(b"{}".to_vec()).await.unwrap();
    hb
}

/// Who the directory says holds `n`.
async fn holder(bus: &Bus, n: &str) -> Option<NameEntry> {
    let js = async_nats::jetstream::new(bus.client().clone());
    let kv = js
        .get_key_value(name_bucket(bus.subjects().prefix()))
        .await
        .unwrap();
    kv.get(n)
        .await
        .unwrap()
        .map(|v| serde_json::from_slice(&v).unwrap())
}

#[tokio::test]
async fn of_two_live_hosts_racing_for_one_name_exactly_one_wins() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let _a = beat(&bus, "ha").await;
    let _b = beat(&bus, "hb").await;
    let a = Arc::new(NameDirectory::new(bus.clone(), host("ha")));
    let b = Arc::new(NameDirectory::new(bus.clone(), host("hb")));
    for round in 0..10 {
        let n = name(&format!("web-{round}"));
        let (ia, ib) = (new_vm_id(), new_vm_id());
        let (ra, rb) = tokio::join!(a.claim(&n, &ia), b.claim(&n, &ib));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let held = holder(&bus, n.as_str()).await.unwrap();
        match (&ra, &rb) {
            (Claim::Claimed, Claim::Taken { host, id }) => {
                assert_eq!((host.as_str(), id), ("ha", &ia));
                assert_eq!((held.host.as_str(), &held.id), ("ha", &ia));
            }
            (Claim::Taken { host, id }, Claim::Claimed) => {
                assert_eq!((host.as_str(), id), ("hb", &ib));
                assert_eq!((held.host.as_str(), &held.id), ("hb", &ib));
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_name_of_a_host_whose_controller_is_gone_is_taken_over_once() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let gone = NameDirectory::new(bus.clone(), host("hgone"));
    let hb = beat(&bus, "hgone").await;
    let web = name("web");
    let old = new_vm_id();
    assert_eq!(gone.claim(&web, &old).await.unwrap(), Claim::Claimed);
    let _a = beat(&bus, "ha").await;
    let _b = beat(&bus, "hb").await;
    let a = NameDirectory::new(bus.clone(), host("ha"));
    let b = NameDirectory::new(bus.clone(), host("hb"));
    // Alive: taken.
    assert_eq!(
        a.claim(&web, &new_vm_id()).await.unwrap(),
        Claim::Taken {
            host: host("hgone"),
            id: old.clone()
        }
    );
    // Its controller stopped (its heartbeat key deleted): the next claim takes it over, and
    // then it is that host's, alive, for everyone else.
    hb.remove().await.unwrap();
    let (ia, ib) = (new_vm_id(), new_vm_id());
    let (ra, rb) = tokio::join!(a.claim(&web, &ia), b.claim(&web, &ib));
    let winners = [ra.unwrap(), rb.unwrap()]
        .iter()
        .filter(|c| **c == Claim::Claimed)
        .count();
    assert_eq!(winners, 1, "a takeover is a compare-and-set");
    let held = holder(&bus, "web").await.unwrap();
    assert!(
        [("ha", &ia), ("hb", &ib)].contains(&(held.host.as_str(), &held.id)),
        "{held:?}"
    );
}

#[tokio::test]
async fn a_holder_without_a_heartbeat_is_asked_and_keeps_the_vms_it_has() {
    // A live controller whose heartbeat is not in yet (a lab's JetStream still forming) must
    // keep its names: it is asked for the VM. One that answers it has no such VM loses the
    // stale key.
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let held = banger_testkit::stand_in_controller::vm(
        7,
        "web",
        "hq",
        banger_proto::vm::VmState::Running,
        None,
    );
    let _hq = banger_testkit::stand_in_controller::FakeController::start(
        &nats,
        "hq",
        vec![held.clone()],
        true,
    )
    .await;
    let hq = NameDirectory::new(bus.clone(), host("hq"));
    assert_eq!(
        hq.claim(&name("web"), &held.id).await.unwrap(),
        Claim::Claimed
    );
    let stale = new_vm_id();
    assert_eq!(
        hq.claim(&name("old"), &stale).await.unwrap(),
        Claim::Claimed
    );
    let _a = beat(&bus, "ha").await;
    let a = NameDirectory::new(bus.clone(), host("ha"));
    assert_eq!(
        a.claim(&name("web"), &new_vm_id()).await.unwrap(),
        Claim::Taken {
            host: host("hq"),
            id: held.id.clone()
        }
    );
    assert_eq!(holder(&bus, "web").await.unwrap().host.as_str(), "hq");
    let mine = new_vm_id();
    assert_eq!(a.claim(&name("old"), &mine).await.unwrap(), Claim::Claimed);
    assert_eq!(holder(&bus, "old").await.unwrap().id, mine);
}

#[tokio::test]
async fn release_deletes_only_the_key_of_that_vm_and_the_name_is_free_again() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let _a = beat(&bus, "ha").await;
    let a = NameDirectory::new(bus.clone(), host("ha"));
    let b = NameDirectory::new(bus.clone(), host("hb"));
    let web = name("web");
    let id = new_vm_id();
    assert_eq!(a.claim(&web, &id).await.unwrap(), Claim::Claimed);
    // Another VM id, or another host: not theirs to release.
    a.release(&web, &new_vm_id()).await.unwrap();
    b.release(&web, &id).await.unwrap();
    assert_eq!(holder(&bus, "web").await.unwrap().id, id);
    // The same host again: the local database decides.
    assert_eq!(a.claim(&web, &new_vm_id()).await.unwrap(), Claim::Here);
    a.release(&web, &id).await.unwrap();
    assert_eq!(holder(&bus, "web").await, None);
    // Free: created again (over the delete marker).
    let next = new_vm_id();
    assert_eq!(b.claim(&web, &next).await.unwrap(), Claim::Claimed);
    assert_eq!(holder(&bus, "web").await.unwrap().id, next);
}

#[tokio::test]
async fn a_sync_writes_missing_keys_removes_stale_ones_and_reports_conflicts() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    let _a = beat(&bus, "ha").await;
    let _b = beat(&bus, "hb").await;
    let b = NameDirectory::new(bus.clone(), host("hb"));
    assert_eq!(
        b.claim(&name("db"), &new_vm_id()).await.unwrap(),
        Claim::Claimed
    );
    // ha's directory: a key for a VM it no longer has (a crash after the record's delete),
    // and one naming an older VM of the same name (a crash after a re-create's record).
    let a = NameDirectory::new(bus.clone(), host("ha")).stale_after(Duration::ZERO);
    let (gone, old_web, web) = (new_vm_id(), new_vm_id(), new_vm_id());
    assert_eq!(a.claim(&name("gone"), &gone).await.unwrap(), Claim::Claimed);
    assert_eq!(
        a.claim(&name("web"), &old_web).await.unwrap(),
        Claim::Claimed
    );
    let api = new_vm_id();
    let local: Vec<(VmName, VmId)> = vec![
        (name("web"), web.clone()),
        (name("api"), api.clone()),
        (name("db"), new_vm_id()),
    ];
    let report = a.sync(&local).await.unwrap();
    let mut written = report.written.clone();
    written.sort();
    assert_eq!(written, [name("api"), name("web")]);
    assert_eq!(report.removed, [name("gone")]);
    assert_eq!(report.conflicts, [(name("db"), host("hb"))]);
    assert_eq!(holder(&bus, "web").await.unwrap().id, web);
    assert_eq!(holder(&bus, "api").await.unwrap().id, api);
    assert_eq!(holder(&bus, "gone").await, None);
    assert_eq!(holder(&bus, "db").await.unwrap().host.as_str(), "hb");
    // In line now: a second sync changes nothing but reports the conflict again.
    let again = a.sync(&local).await.unwrap();
    assert_eq!(
        again,
        SyncReport {
            conflicts: vec![(name("db"), host("hb"))],
            ..SyncReport::default()
        }
    );
    // With the default age, a fresh stale key is left alone: it may be a create in flight.
    let careful = NameDirectory::new(bus.clone(), host("ha"));
    assert_eq!(
        careful.claim(&name("new"), &new_vm_id()).await.unwrap(),
        Claim::Claimed
    );
    assert!(careful.sync(&local).await.unwrap().removed.is_empty());
    assert!(holder(&bus, "new").await.is_some());
}

#[tokio::test]
async fn a_controller_claims_on_create_refuses_a_live_hosts_name_and_releases_on_delete() {
    let mut h = Harness::start_with(test_config(), Fakes::default()).await;
    // The harness's controller, with the real lab (the directory on its nats-server).
    let lab = Arc::new(BusLab::new(
        h.bus.clone(),
        h.host(),
        Arc::new(std::sync::atomic::AtomicUsize::new(1)),
        Duration::from_secs(2),
    ));
    h.rebuild_with_lab(lab).await;
    let web = h.create("web").await;
    let held = holder(&h.bus, "web").await.unwrap();
    assert_eq!((held.host, held.id), (h.host(), web.id.clone()));
    // Another live host: refused, nothing recorded there.
    let _h2 = beat(&h.bus, "h2").await;
    let h2 = NameDirectory::new(h.bus.clone(), host("h2"));
    assert!(matches!(
        h2.claim(&name("web"), &new_vm_id()).await.unwrap(),
        Claim::Taken { .. }
    ));
    // h2 holds `db`: this controller refuses it, with the holder named, and records nothing.
    assert_eq!(
        h2.claim(&name("db"), &new_vm_id()).await.unwrap(),
        Claim::Claimed
    );
    let err = h.create_req(&create_request("db")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("host h2"), "{}", err.message);
    assert_eq!(h.list().await.len(), 1);
    // A local duplicate: refused by the database, the key still names the first VM.
    let err = h.create_req(&create_request("web")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert_eq!(holder(&h.bus, "web").await.unwrap().id, web.id);
    // Deleted: the name is free for h2.
    h.op::<vm::Delete>(&web.id).await.unwrap();
    assert_eq!(holder(&h.bus, "web").await, None);
    assert_eq!(
        h2.claim(&name("web"), &new_vm_id()).await.unwrap(),
        Claim::Claimed
    );
}
