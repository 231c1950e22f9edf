//! The lease database across versions: a file written by netd before the shared storage layer
//! (schema version 1, set by hand in its schema) opens with every lease and port forward
//! intact, and a file from a newer netd is refused, unchanged.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::net::Ipv4Addr;
use std::path::Path;

use banger_netd::store::{LeaseStore, SCHEMA, StoreError};
use banger_proto::net::{PortForward, Protocol};
use banger_proto::{VmId, VmName};

/// The schema exactly as `netd/src/store.rs` created it before the shared layer.
const PREVIOUS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    vm_id TEXT PRIMARY KEY NOT NULL,
    vm_name TEXT NOT NULL,
    ip TEXT NOT NULL UNIQUE,
    mac TEXT NOT NULL UNIQUE,
    tap TEXT NOT NULL UNIQUE,
    active INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS port_forwards (
    vm_id TEXT NOT NULL REFERENCES leases(vm_id) ON DELETE CASCADE,
    protocol TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    host_port INTEGER NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
    guest_port INTEGER NOT NULL CHECK (guest_port BETWEEN 1 AND 65535),
    PRIMARY KEY (protocol, host_port)
) STRICT;
PRAGMA user_version = 1;
";

const A: &str = "aa000000000000000000000000000000";
const B: &str = "bb000000000000000000000000000000";

fn write_previous(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
        .unwrap();
    c.execute_batch(PREVIOUS_SCHEMA).unwrap();
    c.execute_batch(&format!(
        "INSERT INTO leases VALUES ('{A}', 'web', '10.1.0.2', '06:00:0a:01:00:02', 'bgaa0000000000', 1, 100, 200);
         INSERT INTO leases VALUES ('{B}', 'db', '10.1.0.3', '06:00:0a:01:00:03', 'bgbb0000000000', 0, 110, 210);
         INSERT INTO port_forwards VALUES ('{A}', 'tcp', 8080, 80);
         INSERT INTO port_forwards VALUES ('{A}', 'udp', 5353, 53);"
    ))
    .unwrap();
}

#[tokio::test]
async fn a_database_of_the_previous_schema_opens_with_every_lease() {
    let dir = tempfile::tempdir().unwrap();
    write_previous(&dir.path().join("leases.db"));

    let store = LeaseStore::open(dir.path()).unwrap();
    let leases = store.all().await.unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    let (a, b) = (&leases[0], &leases[1]);
    assert_eq!(a.vm_id, VmId::new(A).unwrap());
    assert_eq!(a.vm_name, VmName::new("web").unwrap());
    assert_eq!(a.ip, Ipv4Addr::new(10, 1, 0, 2));
    assert_eq!(
        (a.mac.as_str(), a.tap.as_str()),
        ("06:00:0a:01:00:02", "bgaa0000000000")
    );
    assert!(a.active);
    assert_eq!(a.updated_at_ms, 200);
    assert_eq!(
        a.port_forwards,
        [
            PortForward {
                host_port: 8080,
                guest_port: 80,
                protocol: Protocol::Tcp,
            },
            PortForward {
                host_port: 5353,
                guest_port: 53,
                protocol: Protocol::Udp,
            },
        ]
    );
    assert_eq!(b.vm_id, VmId::new(B).unwrap());
    assert_eq!(b.ip, Ipv4Addr::new(10, 1, 0, 3));
    assert!(!b.active);
    assert!(b.port_forwards.is_empty());

    // The migrated store still works: a stopped VM comes back with its address.
    let r = store
        .reserve(
            VmId::new(B).unwrap(),
            VmName::new("db").unwrap(),
            vec![],
            "10.1.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 1, 0, 1),
        )
        .await
        .unwrap();
    assert_eq!(r.lease.ip, Ipv4Addr::new(10, 1, 0, 3));
    drop(store);
    let c = rusqlite::Connection::open(dir.path().join("leases.db")).unwrap();
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(SCHEMA.version()));
}

#[tokio::test]
async fn a_database_from_a_newer_netd_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    write_previous(&path);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA.version() + 1)
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = LeaseStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Db(banger_sqlite::SqliteError::TooNew { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("written by a newer banger"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
}
