//! `kv::follow_lab_replicas` against a real nats-server: a single node holds one replica at
//! most, so this proves the decisions (no lab, enough, an unreadable bucket); the raise itself
//! (1 -> 3 on a three-node cluster) is proven by e2e's lab_permissions test (with the roles' rights) and the documented lab.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::time::Duration;

use async_nats::jetstream::stream::StorageType;
use banger_bus::Bus;
use banger_bus::kv::{self, BucketSpec, LabReplicas};
use banger_testkit::NatsServer;

async fn bus(nats: &NatsServer) -> Bus {
    let client = async_nats::connect(nats.url()).await.unwrap();
    Bus::new(client, banger_proto::Subjects::default())
}

fn spec(replicas: Option<usize>) -> BucketSpec<'static> {
    BucketSpec {
        description: "test bucket",
        storage: StorageType::Memory,
        max_age: Duration::ZERO,
        replicas,
    }
}

#[tokio::test]
async fn a_bucket_follows_the_labs_replicas_only_once_there_is_a_lab() {
    let nats = NatsServer::start();
    let bus = bus(&nats).await;
    kv::open(&bus, "T_ONE", spec(None)).await.unwrap();
    // No subnet bucket: no lab to follow (single host, or the lab's first netd is starting).
    assert_eq!(
        kv::follow_lab_replicas(&bus, "T_ONE").await.unwrap(),
        LabReplicas::NoLab
    );
    let subnets = banger_proto::net::subnet_bucket(bus.subjects().prefix());
    kv::open(&bus, &subnets, spec(Some(1))).await.unwrap();
    // A bucket that does not exist (yet) cannot be read.
    assert!(kv::follow_lab_replicas(&bus, "NOPE").await.is_err());
    // A lab of one replica: the bucket has enough.
    assert_eq!(
        kv::follow_lab_replicas(&bus, "T_ONE").await.unwrap(),
        LabReplicas::Enough
    );
}
