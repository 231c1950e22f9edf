//! The registry across versions: a file written by stord before the shared storage layer
//! (schema version 1) opens with every image and volume intact, and a file from a newer stord
//! is refused, unchanged.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::Path;

use banger_proto::{ImageName, MemMib, VmId};
use banger_stord::db::{self, DbError, SCHEMA};

/// The schema exactly as `stord/src/db.rs` created it before the shared layer (it then set
/// `user_version` to 1).
const PREVIOUS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    name             TEXT PRIMARY KEY NOT NULL,
    kernel           TEXT NOT NULL,
    initrd           TEXT,
    rootfs           TEXT NOT NULL,
    kernel_args      TEXT NOT NULL,
    default_disk_mib INTEGER NOT NULL CHECK (default_disk_mib > 0),
    rootfs_bytes     INTEGER NOT NULL,
    rootfs_mtime_ns  INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    vm_id          TEXT PRIMARY KEY NOT NULL,
    image          TEXT NOT NULL REFERENCES images(name) ON DELETE RESTRICT,
    backend        TEXT NOT NULL,
    root_path      TEXT NOT NULL,
    work_disk_path TEXT NOT NULL,
    disk_mib       INTEGER NOT NULL CHECK (disk_mib > 0),
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS volumes_by_image ON volumes(image);
";

const VM1: &str = "11111111111111111111111111111111";
const VM2: &str = "22222222222222222222222222222222";

fn write_previous(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
        .unwrap();
    c.execute_batch(PREVIOUS_SCHEMA).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    c.execute_batch(&format!(
        "INSERT INTO images VALUES ('debian', '/img/vmlinux', '/img/initrd', '/img/debian.ext4',
                                    'console=ttyS0 reboot=k', 2048, 1073741824, 1234567890, 50);
         INSERT INTO images VALUES ('alpine', '/img/vmlinux', NULL, '/img/alpine.ext4',
                                    'console=ttyS0', 512, 8388608, 987654321, 60);
         INSERT INTO volumes VALUES ('{VM1}', 'debian', 'dm-snapshot', '/dev/dm-3',
                                     '/s/volumes/{VM1}/work.ext4', 4096, 70);
         INSERT INTO volumes VALUES ('{VM2}', 'debian', 'sparse-copy', '/s/volumes/{VM2}/root.ext4',
                                     '/s/volumes/{VM2}/work.ext4', 2048, 80);"
    ))
    .unwrap();
}

#[test]
fn a_registry_of_the_previous_schema_opens_with_every_image_and_volume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stord.db");
    write_previous(&path);

    let db = db::open(&path).unwrap();
    let images = db.images().unwrap();
    let names: Vec<&str> = images.iter().map(|i| i.info.name.as_str()).collect();
    assert_eq!(names, ["alpine", "debian"]);
    let debian = &images[1];
    assert_eq!(debian.info.kernel, "/img/vmlinux");
    assert_eq!(debian.info.initrd.as_deref(), Some("/img/initrd"));
    assert_eq!(debian.info.rootfs, "/img/debian.ext4");
    assert_eq!(debian.info.kernel_args, "console=ttyS0 reboot=k");
    assert_eq!(debian.info.default_disk_mib.get(), 2048);
    assert_eq!(debian.info.rootfs_bytes, 1_073_741_824);
    assert_eq!(debian.rootfs_mtime_ns, 1_234_567_890);
    assert_eq!(debian.info.created_at_ms, 50);
    assert_eq!(images[0].info.initrd, None);

    let volumes = db.volumes().unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let v1 = &volumes[0];
    assert_eq!(v1.vm_id, VmId::new(VM1).unwrap());
    assert_eq!(v1.image, ImageName::new("debian").unwrap());
    assert_eq!(v1.backend, "dm-snapshot");
    assert_eq!(v1.root_path, "/dev/dm-3");
    assert_eq!(v1.work_disk_path, format!("/s/volumes/{VM1}/work.ext4"));
    assert_eq!(v1.disk_mib, MemMib::new(4096).unwrap());
    assert_eq!(v1.created_at_ms, 70);
    assert_eq!(volumes[1].backend, "sparse-copy");

    // The foreign key still guards the images in use.
    let r = db.delete_image(&ImageName::new("debian").unwrap());
    assert!(matches!(r, Err(DbError::Constraint(_))), "{r:?}");
    assert!(db.delete_image(&ImageName::new("alpine").unwrap()).unwrap());
    drop(db);
    let c = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(SCHEMA.version()));
}

#[test]
fn a_registry_from_a_newer_stord_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stord.db");
    write_previous(&path);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA.version() + 1)
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = db::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DbError::Store(banger_sqlite::SqliteError::TooNew { .. })
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
