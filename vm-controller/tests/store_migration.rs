//! The VM database across versions: a file written by the controller before schema versions
//! existed is migrated with every record intact, and a file from a newer controller is
//! refused, unchanged.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::Path;

use banger_proto::net::{PortForward, Protocol};
use banger_proto::vm::{VmNetwork, VmState};
use banger_proto::{HostId, VmId};
use banger_vm_controller::store::{SCHEMA, Store, StoreError};

/// The schema exactly as `vm-controller/src/store.rs` created it before versioning (it never
/// set `user_version`, so such files are at version 0).
const UNVERSIONED_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vms (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL UNIQUE,
    state          TEXT NOT NULL,
    image          TEXT NOT NULL,
    cpus           INTEGER NOT NULL CHECK (cpus > 0),
    memory_mib     INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_mib       INTEGER NOT NULL CHECK (disk_mib > 0),
    ip             TEXT,
    mac            TEXT,
    tap            TEXT,
    port_forwards  TEXT NOT NULL DEFAULT '[]',
    reason         TEXT,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    started_at_ms  INTEGER,
    touched_at_ms  INTEGER,
    pid            INTEGER,
    vsock_cid      INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
";

const RUNNING: &str = "0123456789abcdef0123456789abcdef";
const STOPPED: &str = "fedcba9876543210fedcba9876543210";

/// Writes an unversioned database the way the old controller left it, WAL and all.
fn write_unversioned(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
    c.execute_batch(UNVERSIONED_SCHEMA).unwrap();
    let forwards = serde_json::to_string(&[PortForward {
        host_port: 8080,
        guest_port: 80,
        protocol: Protocol::Tcp,
    }])
    .unwrap();
    c.execute(
        "INSERT INTO vms (id, name, state, image, cpus, memory_mib, disk_mib, ip, mac, tap,
                          port_forwards, reason, created_at_ms, updated_at_ms, started_at_ms,
                          touched_at_ms, pid, vsock_cid)
         VALUES (?1, 'web', 'running', 'debian', 2, 512, 2048, '10.77.0.2', '06:00:0a:4d:00:02',
                 'bgtap0123456789', ?2, NULL, 1000, 2000, 1500, 1900, 4242, 3)",
        rusqlite::params![RUNNING, forwards],
    )
    .unwrap();
    c.execute(
        "INSERT INTO vms (id, name, state, image, cpus, memory_mib, disk_mib, reason,
                          created_at_ms, updated_at_ms, vsock_cid)
         VALUES (?1, 'db', 'stopped', 'alpine', 1, 256, 1024, 'stopped by user', 10, 20, 5)",
        [STOPPED],
    )
    .unwrap();
    c.execute("INSERT INTO meta (key, value) VALUES ('event_seq', 41)", [])
        .unwrap();
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0, "the old controller never set a version");
}

#[tokio::test]
async fn an_unversioned_database_is_migrated_with_every_vm_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vms.sqlite");
    write_unversioned(&path);

    let store = Store::open(&path, HostId::new("h1").unwrap()).unwrap();
    let vms = store.list().await.unwrap();
    assert_eq!(vms.len(), 2, "{vms:?}");

    let db = &vms[0];
    assert_eq!(db.info.id, VmId::new(STOPPED).unwrap());
    assert_eq!(db.info.name.as_str(), "db");
    assert_eq!(db.info.state, VmState::Stopped);
    assert_eq!(db.info.image.as_str(), "alpine");
    assert_eq!((db.info.cpus.get(), db.info.memory_mib.get()), (1, 256));
    assert_eq!(db.info.disk_mib.get(), 1024);
    assert_eq!(db.info.network, None);
    assert!(db.info.port_forwards.is_empty());
    assert_eq!(db.info.reason.as_deref(), Some("stopped by user"));
    assert_eq!((db.info.created_at_ms, db.info.updated_at_ms), (10, 20));
    assert_eq!((db.info.started_at_ms, db.info.touched_at_ms), (None, None));
    assert_eq!((db.pid, db.vsock_cid), (None, 5));

    let web = &vms[1];
    assert_eq!(web.info.id, VmId::new(RUNNING).unwrap());
    assert_eq!(web.info.name.as_str(), "web");
    assert_eq!(web.info.host.as_str(), "h1");
    assert_eq!(web.info.state, VmState::Running);
    assert_eq!(web.info.image.as_str(), "debian");
    assert_eq!((web.info.cpus.get(), web.info.memory_mib.get()), (2, 512));
    assert_eq!(web.info.disk_mib.get(), 2048);
    assert_eq!(
        web.info.network,
        Some(VmNetwork {
            ip: "10.77.0.2".into(),
            mac: "06:00:0a:4d:00:02".into(),
            tap: "bgtap0123456789".into(),
        })
    );
    assert_eq!(
        web.info.port_forwards,
        [PortForward {
            host_port: 8080,
            guest_port: 80,
            protocol: Protocol::Tcp,
        }]
    );
    assert_eq!(web.info.reason, None);
    assert_eq!(
        (web.info.created_at_ms, web.info.updated_at_ms),
        (1000, 2000)
    );
    assert_eq!(
        (web.info.started_at_ms, web.info.touched_at_ms),
        (Some(1500), Some(1900))
    );
    assert_eq!((web.pid, web.vsock_cid), (Some(4242), 3));

    // The event sequence continues where it was, and the file now carries its version.
    assert_eq!(store.next_event_seq(|_| {}).await.unwrap(), 42);
    drop(store);
    let c = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(SCHEMA.version()));
    assert!(version >= 1);
}

#[tokio::test]
async fn a_database_from_a_newer_controller_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vms.sqlite");
    write_unversioned(&path);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA.version() + 1)
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, HostId::new("h1").unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Db(banger_sqlite::SqliteError::TooNew { .. })
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("written by a newer banger") && msg.contains("vms.sqlite"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
}
