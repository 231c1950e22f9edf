//! stord's SQLite registry: images and the volumes made from them.
//!
//! One file, `<state_dir>/stord/stord.db`. The file, its connection profile, write
//! serialisation and schema versions are [`banger_sqlite`]'s: the database is created 0600 in a
//! 0700 directory, every connection gets WAL, a busy timeout, foreign keys and
//! `synchronous=NORMAL`, writes take turns in `BEGIN IMMEDIATE` transactions, and [`SCHEMA`]
//! lists the schema's versions (append a step to change it; never edit a released one). The
//! foreign key from `volumes.image` to
//! `images.name` makes "remove an image while a VM uses it" impossible even if two requests
//! race. All calls block: use them from a blocking thread.

use std::path::Path;

use banger_proto::store::ImageInfo;
use banger_proto::{ImageName, MemMib, VmId};
use banger_sqlite::{Migration, Schema, Step};
use rusqlite::{OptionalExtension as _, params};

/// Version 1: the schema since the first release (which already recorded `user_version` 1).
const V1_IMAGES_AND_VOLUMES: &str = "
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

/// The registry's schema history, oldest first.
pub const SCHEMA: Schema = Schema {
    name: "registry",
    migrations: &[Migration {
        description: "the images and volumes tables",
        step: Step::Sql(V1_IMAGES_AND_VOLUMES),
    }],
};

/// A registered image as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// The wire view.
    pub info: ImageInfo,
    /// The rootfs's modification time at registration, nanoseconds: a changed image is
    /// refused instead of silently corrupting dm snapshots of it.
    pub rootfs_mtime_ns: i64,
}

/// One VM's volumes as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRow {
    /// The VM.
    pub vm_id: VmId,
    /// Its image.
    pub image: ImageName,
    /// The back-end that made the root (wire name).
    pub backend: String,
    /// What the guest boots.
    pub root_path: String,
    /// The work disk image.
    pub work_disk_path: String,
    /// Work disk size.
    pub disk_mib: MemMib,
    /// Creation time.
    pub created_at_ms: u64,
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Opening, migrating or using the database file failed (see [`banger_sqlite::SqliteError`]).
    #[error(transparent)]
    Store(#[from] banger_sqlite::SqliteError),
    /// A statement failed.
    #[error("{step} in the registry")]
    Sql {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A unique key already exists.
    #[error("{0} already exists")]
    Duplicate(String),
    /// A foreign key refused the change.
    #[error("{0}")]
    Constraint(String),
    /// A stored value does not parse (the file was edited or is damaged).
    #[error("the registry holds an invalid value: {0}")]
    Corrupt(String),
}

fn sql(step: &'static str) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError::Sql { step, source }
}

/// Whether `e` is a constraint violation of kind `code`.
fn is_constraint(e: &rusqlite::Error, code: std::ffi::c_int) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == code)
}

/// Whether `e` is a foreign key refusal. SQLite reports an `ON DELETE RESTRICT` violation as
/// `SQLITE_CONSTRAINT_TRIGGER` (it is enforced like a trigger) and a deferred or insert-time one
/// as `SQLITE_CONSTRAINT_FOREIGNKEY`.
fn is_foreign_key(e: &rusqlite::Error) -> bool {
    is_constraint(e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
        || is_constraint(e, rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER)
}

/// The registry.
#[derive(Debug)]
pub struct Db {
    db: banger_sqlite::Db,
}

/// Opens (creating when needed, 0600 in a 0700 directory) the registry at `path`, migrating it
/// to [`SCHEMA`]'s version. Blocks.
///
/// # Errors
/// [`DbError::Store`] when the file cannot be created or opened, a migration fails, or the file
/// was written by a newer banger (left unchanged).
pub fn open(path: &Path) -> Result<Db, DbError> {
    Ok(Db {
        db: banger_sqlite::Db::open(path, &SCHEMA)?,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn image_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ImageRow, DbError>> {
    let name: String = r.get(0)?;
    let disk: i64 = r.get(5)?;
    let bytes: i64 = r.get(6)?;
    let created: i64 = r.get(8)?;
    let parsed = (|| {
        Ok(ImageRow {
            info: ImageInfo {
                name: ImageName::new(&name)
                    .map_err(|e| DbError::Corrupt(format!("image name: {e}")))?,
                kernel: r.get(1).map_err(sql("reading an image"))?,
                initrd: r.get(2).map_err(sql("reading an image"))?,
                rootfs: r.get(3).map_err(sql("reading an image"))?,
                kernel_args: r.get(4).map_err(sql("reading an image"))?,
                default_disk_mib: MemMib::new(disk)
                    .map_err(|e| DbError::Corrupt(format!("image {name}: {e}")))?,
                rootfs_bytes: u64::try_from(bytes).unwrap_or(0),
                created_at_ms: u64::try_from(created).unwrap_or(0),
            },
            rootfs_mtime_ns: r.get(7).map_err(sql("reading an image"))?,
        })
    })();
    Ok(parsed)
}

fn volume_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<VolumeRow, DbError>> {
    let vm: String = r.get(0)?;
    let image: String = r.get(1)?;
    let disk: i64 = r.get(5)?;
    let created: i64 = r.get(6)?;
    let backend: String = r.get(2)?;
    let root_path: String = r.get(3)?;
    let work_disk_path: String = r.get(4)?;
    Ok((|| {
        Ok(VolumeRow {
            vm_id: VmId::new(&vm).map_err(|e| DbError::Corrupt(format!("volume id: {e}")))?,
            image: ImageName::new(&image)
                .map_err(|e| DbError::Corrupt(format!("volume {vm}: {e}")))?,
            backend,
            root_path,
            work_disk_path,
            disk_mib: MemMib::new(disk)
                .map_err(|e| DbError::Corrupt(format!("volume {vm}: {e}")))?,
            created_at_ms: u64::try_from(created).unwrap_or(0),
        })
    })())
}

const IMAGE_COLUMNS: &str = "name, kernel, initrd, rootfs, kernel_args, default_disk_mib, \
                             rootfs_bytes, rootfs_mtime_ns, created_at_ms";
const VOLUME_COLUMNS: &str =
    "vm_id, image, backend, root_path, work_disk_path, disk_mib, created_at_ms";

impl Db {
    /// Adds an image; [`DbError::Duplicate`] when the name is taken.
    pub fn insert_image(&self, row: &ImageRow) -> Result<(), DbError> {
        let i = &row.info;
        self.db.write(|tx| {
            let res = tx.execute(
                &format!(
                    "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"
                ),
                params![
                    i.name.as_str(),
                    i.kernel,
                    i.initrd,
                    i.rootfs,
                    i.kernel_args,
                    i.default_disk_mib.get(),
                    to_i64(i.rootfs_bytes),
                    row.rootfs_mtime_ns,
                    to_i64(i.created_at_ms),
                ],
            );
            match res {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => Err(
                    DbError::Duplicate(format!("an image named {:?}", i.name.as_str())),
                ),
                Err(e) => Err(sql("adding an image")(e)),
            }
        })
    }

    /// One image.
    pub fn image(&self, name: &ImageName) -> Result<Option<ImageRow>, DbError> {
        self.db.read(|c| {
            c.query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE name = ?1"),
                [name.as_str()],
                image_from_row,
            )
            .optional()
            .map_err(sql("reading an image"))?
            .transpose()
        })
    }

    /// Every image, by name.
    pub fn images(&self) -> Result<Vec<ImageRow>, DbError> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name"))
                .map_err(sql("listing images"))?;
            let rows = stmt
                .query_map([], image_from_row)
                .map_err(sql("listing images"))?;
            rows.map(|r| r.map_err(sql("listing images"))?).collect()
        })
    }

    /// Removes an image; `Ok(false)` when there was none, [`DbError::Constraint`] while a
    /// volume uses it.
    pub fn delete_image(&self, name: &ImageName) -> Result<bool, DbError> {
        self.db.write(|tx| {
            match tx.execute("DELETE FROM images WHERE name = ?1", [name.as_str()]) {
                Ok(n) => Ok(n > 0),
                Err(e) if is_foreign_key(&e) => Err(DbError::Constraint(format!(
                    "image {name} is used by a VM volume"
                ))),
                Err(e) => Err(sql("removing an image")(e)),
            }
        })
    }

    /// The VMs whose volumes use `image`.
    pub fn volumes_using(&self, image: &ImageName) -> Result<Vec<VmId>, DbError> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare("SELECT vm_id FROM volumes WHERE image = ?1 ORDER BY vm_id")
                .map_err(sql("finding an image's volumes"))?;
            let ids = stmt
                .query_map([image.as_str()], |r| r.get::<_, String>(0))
                .map_err(sql("finding an image's volumes"))?;
            ids.map(|r| {
                let s = r.map_err(sql("finding an image's volumes"))?;
                VmId::new(&s).map_err(|e| DbError::Corrupt(format!("volume id: {e}")))
            })
            .collect()
        })
    }

    /// Adds a volume record; [`DbError::Constraint`] when its image was removed meanwhile.
    pub fn insert_volume(&self, v: &VolumeRow) -> Result<(), DbError> {
        self.db.write(|tx| {
            let res = tx.execute(
                &format!("INSERT INTO volumes ({VOLUME_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"),
                params![
                    v.vm_id.as_str(),
                    v.image.as_str(),
                    v.backend,
                    v.root_path,
                    v.work_disk_path,
                    v.disk_mib.get(),
                    to_i64(v.created_at_ms),
                ],
            );
            match res {
                Ok(_) => Ok(()),
                Err(e) if is_foreign_key(&e) => Err(DbError::Constraint(format!(
                    "image {} was removed meanwhile",
                    v.image
                ))),
                Err(e) if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                    Err(DbError::Duplicate(format!("volumes for VM {}", v.vm_id)))
                }
                Err(e) => Err(sql("adding a volume")(e)),
            }
        })
    }

    /// One VM's volumes.
    pub fn volume(&self, vm: &VmId) -> Result<Option<VolumeRow>, DbError> {
        self.db.read(|c| {
            c.query_row(
                &format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE vm_id = ?1"),
                [vm.as_str()],
                volume_from_row,
            )
            .optional()
            .map_err(sql("reading a volume"))?
            .transpose()
        })
    }

    /// Every volume, by VM id.
    pub fn volumes(&self) -> Result<Vec<VolumeRow>, DbError> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {VOLUME_COLUMNS} FROM volumes ORDER BY vm_id"
                ))
                .map_err(sql("listing volumes"))?;
            let rows = stmt
                .query_map([], volume_from_row)
                .map_err(sql("listing volumes"))?;
            rows.map(|r| r.map_err(sql("listing volumes"))?).collect()
        })
    }

    /// Records a new root path (a dm root re-activated under another minor).
    pub fn set_root_path(&self, vm: &VmId, root_path: &str) -> Result<(), DbError> {
        self.db.write(|tx| {
            tx.execute(
                "UPDATE volumes SET root_path = ?2 WHERE vm_id = ?1",
                params![vm.as_str(), root_path],
            )
            .map(drop)
            .map_err(sql("updating a volume's root"))
        })
    }

    /// Records a new work disk size.
    pub fn set_disk_mib(&self, vm: &VmId, mib: MemMib) -> Result<(), DbError> {
        self.db.write(|tx| {
            tx.execute(
                "UPDATE volumes SET disk_mib = ?2 WHERE vm_id = ?1",
                params![vm.as_str(), mib.get()],
            )
            .map(drop)
            .map_err(sql("updating a volume's size"))
        })
    }

    /// Forgets a VM's volumes; `Ok(false)` when there were none.
    pub fn delete_volume(&self, vm: &VmId) -> Result<bool, DbError> {
        self.db.write(|tx| {
            tx.execute("DELETE FROM volumes WHERE vm_id = ?1", [vm.as_str()])
                .map(|n| n > 0)
                .map_err(sql("removing a volume"))
        })
    }

    /// A connection setting of a pooled connection, for tests of the profile.
    pub fn pragma(&self, name: &str) -> Result<String, DbError> {
        Ok(self.db.pragma(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> ImageRow {
        ImageRow {
            info: ImageInfo {
                name: ImageName::new(name).unwrap(),
                kernel: "/k".into(),
                initrd: None,
                rootfs: "/r".into(),
                kernel_args: "console=ttyS0".into(),
                default_disk_mib: MemMib::new(1024).unwrap(),
                rootfs_bytes: 4096,
                created_at_ms: 1,
            },
            rootfs_mtime_ns: 5,
        }
    }

    fn volume(vm: &str, image: &str) -> VolumeRow {
        VolumeRow {
            vm_id: VmId::new(vm).unwrap(),
            image: ImageName::new(image).unwrap(),
            backend: "sparse-copy".into(),
            root_path: "/v/root.ext4".into(),
            work_disk_path: "/v/work.ext4".into(),
            disk_mib: MemMib::new(64).unwrap(),
            created_at_ms: 2,
        }
    }

    const VM: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn every_connection_gets_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("s.db")).unwrap();
        assert_eq!(db.pragma("journal_mode").unwrap(), "wal");
        assert_eq!(db.pragma("foreign_keys").unwrap(), "1");
        assert_eq!(db.pragma("synchronous").unwrap(), "1"); // NORMAL
        assert_eq!(db.pragma("busy_timeout").unwrap(), "5000");
    }

    #[test]
    fn images_round_trip_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("s.db")).unwrap();
        db.insert_image(&image("debian")).unwrap();
        assert!(matches!(
            db.insert_image(&image("debian")),
            Err(DbError::Duplicate(_))
        ));
        assert_eq!(db.images().unwrap(), vec![image("debian")]);
        assert_eq!(
            db.image(&ImageName::new("debian").unwrap()).unwrap(),
            Some(image("debian"))
        );
        assert_eq!(db.image(&ImageName::new("void").unwrap()).unwrap(), None);
    }

    #[test]
    fn an_image_in_use_cannot_be_removed_even_by_a_racing_request() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("s.db")).unwrap();
        db.insert_image(&image("debian")).unwrap();
        db.insert_volume(&volume(VM, "debian")).unwrap();
        let name = ImageName::new("debian").unwrap();
        let r = db.delete_image(&name);
        assert!(matches!(r, Err(DbError::Constraint(_))), "{r:?}");
        assert_eq!(db.volumes_using(&name).unwrap().len(), 1);
        assert!(db.delete_volume(&VmId::new(VM).unwrap()).unwrap());
        assert!(db.delete_image(&name).unwrap());
        assert!(!db.delete_image(&name).unwrap());
    }

    #[test]
    fn a_volume_of_a_missing_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("s.db")).unwrap();
        assert!(matches!(
            db.insert_volume(&volume(VM, "nope")),
            Err(DbError::Constraint(_))
        ));
        assert!(db.volumes().unwrap().is_empty());
    }

    #[test]
    fn the_registry_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let db = open(&path).unwrap();
            db.insert_image(&image("debian")).unwrap();
            db.insert_volume(&volume(VM, "debian")).unwrap();
            db.set_disk_mib(&VmId::new(VM).unwrap(), MemMib::new(128).unwrap())
                .unwrap();
        }
        let db = open(&path).unwrap();
        let v = db.volume(&VmId::new(VM).unwrap()).unwrap().unwrap();
        assert_eq!(v.disk_mib.get(), 128);
    }
}
