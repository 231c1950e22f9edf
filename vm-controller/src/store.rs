//! The controller's SQLite store: one row per VM of this host, plus the event sequence.
//!
//! The file, its connection profile, write serialisation and schema versions are
//! [`banger_sqlite`]'s: the database is created 0600 in a 0700 directory, every connection gets
//! WAL, a busy timeout, foreign keys and `synchronous=NORMAL`, writes take turns on one writer
//! connection in `BEGIN IMMEDIATE` transactions, and [`SCHEMA`] lists the schema's versions
//! (append a step to change it; never edit a released one). Calls run on the blocking thread
//! pool, never on a runtime worker.
//!
//! State changes go through [`Store::modify`], which reads the row, applies the caller's change
//! and checks the move against [`VmState::can_become`] inside one write transaction — the only
//! place a state is written. Two mutations of one VM never interleave: callers hold that VM's
//! lock (see [`crate::locks`]), and each write is a transaction of its own.
//!
//! A change that is reported by an event numbers that event in the same transaction
//! ([`Store::insert_numbered`], [`Store::modify_numbered`], [`Store::remove_numbered`]), and
//! hands it on in the caller's `committed` callback, run right after the commit while the writer
//! is still held: callbacks run in sequence order, so events are queued for publication in the
//! order they were numbered without a lock around the whole write. A crash can never leave a
//! state change whose event number was not taken, and an operation costs one write transaction
//! per step instead of two. [`Store::write_transactions`] counts the write transactions, so
//! tests can hold the hot path to its count.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use banger_proto::net::PortForward;
use banger_proto::vm::{VmInfo, VmNetwork, VmState};
use banger_proto::{CpuCount, HostId, ImageName, MemMib, VmId, VmName};
use banger_sqlite::{Db, Migration, Schema, Step};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tracing::Instrument as _;

/// The first vsock context id handed to a guest (0-2 are reserved: hypervisor, local, host).
pub const FIRST_GUEST_CID: u32 = 3;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening, migrating or using the database file failed (see [`banger_sqlite::SqliteError`]).
    #[error(transparent)]
    Db(#[from] banger_sqlite::SqliteError),
    /// A statement failed.
    #[error("vm database: {step}")]
    Sql {
        /// What was being done.
        step: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A row held a value that does not parse.
    #[error("vm database row {id}: bad {column} value {value:?}")]
    Decode {
        /// The row.
        id: String,
        /// The column.
        column: &'static str,
        /// The value.
        value: String,
    },
    /// No VM with that id.
    #[error("no vm with id {0}")]
    NotFound(VmId),
    /// The name is taken on this host.
    #[error("a vm named {0} already exists on this host")]
    NameTaken(VmName),
    /// The state machine forbids the move.
    #[error("vm {name} is {from} and cannot become {to}")]
    BadTransition {
        /// The VM.
        name: VmName,
        /// Its state.
        from: VmState,
        /// The refused state.
        to: VmState,
    },
    /// A caller's change was refused.
    #[error("{0}")]
    Refused(String),
}

/// A VM row: the wire snapshot plus what only the controller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// The snapshot shown to users and carried by events.
    pub info: VmInfo,
    /// The hypervisor pid last seen (a hint: the process is always rediscovered by its API
    /// socket before it is signalled).
    pub pid: Option<u32>,
    /// The guest's vsock context id, unique on this host.
    pub vsock_cid: u32,
}

impl VmRecord {
    /// Shorthand for the id.
    pub fn id(&self) -> &VmId {
        &self.info.id
    }

    /// Shorthand for the state.
    pub fn state(&self) -> VmState {
        self.info.state
    }
}

/// What a new record starts with.
#[derive(Debug, Clone)]
pub struct NewVm {
    /// Id.
    pub id: VmId,
    /// Name.
    pub name: VmName,
    /// Image.
    pub image: ImageName,
    /// vCPUs.
    pub cpus: CpuCount,
    /// Memory.
    pub memory_mib: MemMib,
    /// Work disk size.
    pub disk_mib: MemMib,
    /// Port forwards.
    pub port_forwards: Vec<PortForward>,
    /// Creation time.
    pub now_ms: u64,
}

/// The VM store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    host: HostId,
    /// Write transactions begun through this store (every clone shares it).
    writes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

/// Version 1: the schema of the releases before versioning (their files have `user_version`
/// 0 and these tables, which `IF NOT EXISTS` keeps).
const V1_VMS_AND_META: &str = "
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

/// The VM database's schema history, oldest first.
pub const SCHEMA: Schema = Schema {
    name: "vm",
    migrations: &[Migration {
        description: "the vms and meta tables",
        step: Step::Sql(V1_VMS_AND_META),
    }],
};

fn sql(step: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { step, source }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating when needed, 0600 in 0700 directories) the database at `path`, for
    /// VMs of `host`, migrating it to [`SCHEMA`]'s version. Blocks.
    ///
    /// # Errors
    /// [`StoreError::Db`] when the file cannot be created or opened, a migration fails, or the
    /// file was written by a newer banger (left unchanged).
    pub fn open(path: &Path, host: HostId) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::open(path, &SCHEMA)?,
            host,
            writes: Arc::default(),
        })
    }

    /// How many write transactions this store (and its clones) has run since it was opened:
    /// tests hold each operation to its count (a count is behaviour, not timing).
    pub fn write_transactions(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Reads with a pooled connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &HostId) -> Result<T, StoreError> + Send + 'static,
    {
        let host = self.host.clone();
        self.db
            .read_async(move |conn| f(conn, &host))
            .instrument(tracing::debug_span!("db.read"))
            .await
    }

    /// Runs `f` in a write transaction (committed when it succeeds) on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &HostId) -> Result<T, StoreError> + Send + 'static,
    {
        let host = self.host.clone();
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.db
            .write_async(move |tx| f(tx, &host))
            .instrument(tracing::debug_span!("db.write"))
            .await
    }

    /// [`Store::write`], calling `committed` with the value after the commit, writer still
    /// held (so in commit order; see the module's documentation).
    async fn write_then<T, F, C>(&self, f: F, committed: C) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &HostId) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        let host = self.host.clone();
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.db
            .write_then_async(move |tx| f(tx, &host), committed)
            .await
    }

    /// Inserts a `creating` record, allocating a vsock CID. Fails with
    /// [`StoreError::NameTaken`] when the name exists.
    pub async fn insert(&self, vm: NewVm) -> Result<VmRecord, StoreError> {
        self.write(move |tx, host| insert_row(tx, host, vm)).await
    }

    /// [`Store::insert`], numbering the `created` event in the same transaction: returns the
    /// record and the event's sequence number, which `committed` gets first (in commit order).
    pub async fn insert_numbered<C>(
        &self,
        vm: NewVm,
        committed: C,
    ) -> Result<(VmRecord, u64), StoreError>
    where
        C: FnOnce(&VmRecord, u64) + Send + 'static,
    {
        self.write_then(
            move |tx, host| {
                let rec = insert_row(tx, host, vm)?;
                Ok((rec, bump_event_seq(tx)?))
            },
            |(rec, seq)| committed(rec, *seq),
        )
        .await
    }

    /// One VM.
    pub async fn get(&self, id: &VmId) -> Result<VmRecord, StoreError> {
        let id = id.clone();
        self.read(move |conn, host| get_row(conn, host, &id)?.ok_or(StoreError::NotFound(id)))
            .await
    }

    /// One VM, or `None`.
    pub async fn find(&self, id: &VmId) -> Result<Option<VmRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn, host| get_row(conn, host, &id)).await
    }

    /// Every VM, by name.
    pub async fn list(&self) -> Result<Vec<VmRecord>, StoreError> {
        self.read(|conn, host| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM vms ORDER BY name"))
                .map_err(sql("listing vms"))?;
            let rows = stmt
                .query_map([], |r| Ok(decode(r, host)))
                .map_err(sql("listing vms"))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(sql("reading a vm row"))??);
            }
            Ok(out)
        })
        .await
    }

    /// Reads VM `id`, applies `change`, checks any state move against the state machine, and
    /// writes the row back, in one transaction. `updated_at_ms` is set to now.
    pub async fn modify<F>(&self, id: &VmId, change: F) -> Result<VmRecord, StoreError>
    where
        F: FnOnce(&mut VmRecord) -> Result<(), StoreError> + Send + 'static,
    {
        let id = id.clone();
        self.write(move |tx, host| modify_row(tx, host, &id, change))
            .await
    }

    /// [`Store::modify`], numbering the event that reports the change in the same transaction:
    /// returns the record and the event's sequence number, which `committed` gets first (in
    /// commit order).
    pub async fn modify_numbered<F, C>(
        &self,
        id: &VmId,
        change: F,
        committed: C,
    ) -> Result<(VmRecord, u64), StoreError>
    where
        F: FnOnce(&mut VmRecord) -> Result<(), StoreError> + Send + 'static,
        C: FnOnce(&VmRecord, u64) + Send + 'static,
    {
        let id = id.clone();
        self.write_then(
            move |tx, host| {
                let rec = modify_row(tx, host, &id, change)?;
                Ok((rec, bump_event_seq(tx)?))
            },
            |(rec, seq)| committed(rec, *seq),
        )
        .await
    }

    /// Moves VM `id` to `to` (checked), setting `reason`.
    pub async fn transition(
        &self,
        id: &VmId,
        to: VmState,
        reason: Option<String>,
    ) -> Result<VmRecord, StoreError> {
        self.modify(id, move |r| {
            r.info.state = to;
            r.info.reason = reason;
            Ok(())
        })
        .await
    }

    /// Removes VM `id`; returns whether a row was removed.
    pub async fn remove(&self, id: &VmId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.write(move |tx, _| remove_row(tx, &id)).await
    }

    /// [`Store::remove`], numbering the `deleted` event in the same transaction: returns
    /// whether a row was removed and the event's sequence number, which `committed` gets first
    /// (in commit order).
    pub async fn remove_numbered<C>(
        &self,
        id: &VmId,
        committed: C,
    ) -> Result<(bool, u64), StoreError>
    where
        C: FnOnce(u64) + Send + 'static,
    {
        let id = id.clone();
        self.write_then(
            move |tx, _| {
                let removed = remove_row(tx, &id)?;
                Ok((removed, bump_event_seq(tx)?))
            },
            |(_, seq)| committed(*seq),
        )
        .await
    }

    /// Hands out the next event sequence number of this host (persisted, so it keeps increasing
    /// across restarts), in a transaction of its own: for events that report no stored change
    /// (`health`). `committed` gets it first (in commit order).
    pub async fn next_event_seq<C>(&self, committed: C) -> Result<u64, StoreError>
    where
        C: FnOnce(u64) + Send + 'static,
    {
        self.write_then(|tx, _| bump_event_seq(tx), |seq| committed(*seq))
            .await
    }

    /// Runs a pragma query on a fresh pooled connection (tests check the profile with it).
    pub async fn pragma(&self, name: &'static str) -> Result<String, StoreError> {
        self.read(move |conn, _| {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .map_err(sql("reading a pragma"))
        })
        .await
    }
}

/// Inserts a `creating` record in `tx` (see [`Store::insert`]).
fn insert_row(
    tx: &rusqlite::Transaction<'_>,
    host: &HostId,
    vm: NewVm,
) -> Result<VmRecord, StoreError> {
    let taken: bool = tx
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM vms WHERE name = ?1)",
            [vm.name.as_str()],
            |r| r.get(0),
        )
        .map_err(sql("checking the name"))?;
    if taken {
        return Err(StoreError::NameTaken(vm.name));
    }
    let cid = next_cid(tx)?;
    let forwards = serde_json::to_string(&vm.port_forwards).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO vms (id, name, state, image, cpus, memory_mib, disk_mib, port_forwards,
                          created_at_ms, updated_at_ms, vsock_cid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
        params![
            vm.id.as_str(),
            vm.name.as_str(),
            VmState::Creating.as_str(),
            vm.image.as_str(),
            vm.cpus.get(),
            vm.memory_mib.get(),
            vm.disk_mib.get(),
            forwards,
            to_i64(vm.now_ms),
            cid,
        ],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::NameTaken(vm.name.clone())
        }
        e => StoreError::Sql {
            step: "inserting the vm",
            source: e,
        },
    })?;
    get_row(tx, host, &vm.id)?.ok_or(StoreError::NotFound(vm.id))
}

/// Reads VM `id` in `tx`, applies `change`, checks any state move and writes the row back
/// (see [`Store::modify`]).
fn modify_row<F>(
    tx: &rusqlite::Transaction<'_>,
    host: &HostId,
    id: &VmId,
    change: F,
) -> Result<VmRecord, StoreError>
where
    F: FnOnce(&mut VmRecord) -> Result<(), StoreError>,
{
    let before = get_row(tx, host, id)?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let mut after = before.clone();
    change(&mut after)?;
    if after.info.state != before.info.state && !before.info.state.can_become(after.info.state) {
        return Err(StoreError::BadTransition {
            name: before.info.name,
            from: before.info.state,
            to: after.info.state,
        });
    }
    after.info.updated_at_ms = banger_bus::now_ms();
    write_row(tx, &after)?;
    Ok(after)
}

/// Deletes VM `id`'s row in `tx`; returns whether there was one.
fn remove_row(tx: &rusqlite::Transaction<'_>, id: &VmId) -> Result<bool, StoreError> {
    let n = tx
        .execute("DELETE FROM vms WHERE id = ?1", [id.as_str()])
        .map_err(sql("deleting the vm"))?;
    Ok(n > 0)
}

/// Takes the next event sequence number of this host in `tx` (persisted in `meta`, so it keeps
/// increasing across restarts).
fn bump_event_seq(tx: &rusqlite::Transaction<'_>) -> Result<u64, StoreError> {
    let cur: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key = 'event_seq'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql("reading the event sequence"))?;
    let next = cur.unwrap_or(0).saturating_add(1);
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('event_seq', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [next],
    )
    .map_err(sql("writing the event sequence"))?;
    Ok(u64::try_from(next).unwrap_or(0))
}

/// The smallest free CID at or above [`FIRST_GUEST_CID`].
fn next_cid(tx: &rusqlite::Transaction<'_>) -> Result<u32, StoreError> {
    let mut stmt = tx
        .prepare_cached("SELECT vsock_cid FROM vms ORDER BY vsock_cid")
        .map_err(sql("reading vsock cids"))?;
    let used = stmt
        .query_map([], |r| r.get::<_, u32>(0))
        .map_err(sql("reading vsock cids"))?;
    let mut next = FIRST_GUEST_CID;
    for cid in used {
        let cid = cid.map_err(sql("reading vsock cids"))?;
        if cid == next {
            next = next.saturating_add(1);
        } else if cid > next {
            break;
        }
    }
    Ok(next)
}

const COLUMNS: &str = "id, name, state, image, cpus, memory_mib, disk_mib, ip, mac, tap, \
                       port_forwards, reason, created_at_ms, updated_at_ms, started_at_ms, \
                       touched_at_ms, pid, vsock_cid";

fn get_row(conn: &Connection, host: &HostId, id: &VmId) -> Result<Option<VmRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM vms WHERE id = ?1"))
        .map_err(sql("reading a vm"))?;
    let row = stmt
        .query_row([id.as_str()], |r| Ok(decode(r, host)))
        .optional()
        .map_err(sql("reading a vm"))?;
    row.transpose()
}

fn write_row(conn: &Connection, r: &VmRecord) -> Result<(), StoreError> {
    let i = &r.info;
    let forwards = serde_json::to_string(&i.port_forwards).unwrap_or_else(|_| "[]".into());
    let net = i.network.as_ref();
    conn.execute(
        "UPDATE vms SET state = ?2, cpus = ?3, memory_mib = ?4, disk_mib = ?5, ip = ?6, mac = ?7,
                tap = ?8, port_forwards = ?9, reason = ?10, updated_at_ms = ?11,
                started_at_ms = ?12, touched_at_ms = ?13, pid = ?14
         WHERE id = ?1",
        params![
            i.id.as_str(),
            i.state.as_str(),
            i.cpus.get(),
            i.memory_mib.get(),
            i.disk_mib.get(),
            net.map(|n| n.ip.as_str()),
            net.map(|n| n.mac.as_str()),
            net.map(|n| n.tap.as_str()),
            forwards,
            i.reason,
            to_i64(i.updated_at_ms),
            i.started_at_ms.map(to_i64),
            i.touched_at_ms.map(to_i64),
            r.pid,
        ],
    )
    .map_err(sql("updating the vm"))?;
    Ok(())
}

fn decode(r: &Row<'_>, host: &HostId) -> Result<VmRecord, StoreError> {
    let id_text: String = r.get(0).map_err(sql("reading id"))?;
    let bad = |column: &'static str, value: String| StoreError::Decode {
        id: id_text.clone(),
        column,
        value,
    };
    let text = |i: usize, column: &'static str| -> Result<String, StoreError> {
        r.get::<_, String>(i)
            .map_err(|e| bad(column, e.to_string()))
    };
    let opt_text = |i: usize, column: &'static str| -> Result<Option<String>, StoreError> {
        r.get::<_, Option<String>>(i)
            .map_err(|e| bad(column, e.to_string()))
    };
    let int = |i: usize, column: &'static str| -> Result<i64, StoreError> {
        r.get::<_, i64>(i).map_err(|e| bad(column, e.to_string()))
    };
    let opt_int = |i: usize, column: &'static str| -> Result<Option<i64>, StoreError> {
        r.get::<_, Option<i64>>(i)
            .map_err(|e| bad(column, e.to_string()))
    };
    let ms = |v: i64| u64::try_from(v).unwrap_or(0);

    let id = VmId::new(id_text.clone()).map_err(|_| bad("id", id_text.clone()))?;
    let name = text(1, "name")?;
    let name = VmName::new(name.clone()).map_err(|_| bad("name", name))?;
    let state_text = text(2, "state")?;
    let state = VmState::ALL
        .iter()
        .copied()
        .find(|s| s.as_str() == state_text)
        .ok_or_else(|| bad("state", state_text.clone()))?;
    let image = text(3, "image")?;
    let image = ImageName::new(image.clone()).map_err(|_| bad("image", image))?;
    let cpus = int(4, "cpus")?;
    let cpus = CpuCount::new(cpus).map_err(|_| bad("cpus", cpus.to_string()))?;
    let mem = int(5, "memory_mib")?;
    let memory_mib = MemMib::new(mem).map_err(|_| bad("memory_mib", mem.to_string()))?;
    let disk = int(6, "disk_mib")?;
    let disk_mib = MemMib::new(disk).map_err(|_| bad("disk_mib", disk.to_string()))?;
    let network = match (opt_text(7, "ip")?, opt_text(8, "mac")?, opt_text(9, "tap")?) {
        (Some(ip), Some(mac), Some(tap)) => Some(VmNetwork { ip, mac, tap }),
        _ => None,
    };
    let forwards = text(10, "port_forwards")?;
    let port_forwards: Vec<PortForward> =
        serde_json::from_str(&forwards).map_err(|_| bad("port_forwards", forwards.clone()))?;
    let pid = opt_int(16, "pid")?.and_then(|p| u32::try_from(p).ok());
    let cid = int(17, "vsock_cid")?;
    let vsock_cid = u32::try_from(cid).map_err(|_| bad("vsock_cid", cid.to_string()))?;
    Ok(VmRecord {
        info: VmInfo {
            id,
            name,
            host: host.clone(),
            state,
            image,
            cpus,
            memory_mib,
            disk_mib,
            network,
            port_forwards,
            reason: opt_text(11, "reason")?,
            created_at_ms: ms(int(12, "created_at_ms")?),
            updated_at_ms: ms(int(13, "updated_at_ms")?),
            started_at_ms: opt_int(14, "started_at_ms")?.map(ms),
            touched_at_ms: opt_int(15, "touched_at_ms")?.map(ms),
        },
        pid,
        vsock_cid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn new_vm(name: &str) -> NewVm {
        NewVm {
            id: crate::ids::new_vm_id(),
            name: VmName::new(name).unwrap(),
            image: ImageName::new("debian").unwrap(),
            cpus: CpuCount::new(1).unwrap(),
            memory_mib: MemMib::new(256).unwrap(),
            disk_mib: MemMib::new(1024).unwrap(),
            port_forwards: vec![],
            now_ms: 1,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("vms.sqlite"), HostId::new("h1").unwrap()).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn every_pooled_connection_has_the_profile() {
        let (_d, s) = store();
        // Several concurrent users force more than one connection into the pool.
        let checks = (0..6).map(|_| {
            let s = s.clone();
            async move {
                (
                    s.pragma("journal_mode").await.unwrap(),
                    s.pragma("foreign_keys").await.unwrap(),
                    s.pragma("synchronous").await.unwrap(),
                    s.pragma("busy_timeout").await.unwrap(),
                )
            }
        });
        for (journal, fk, sync, busy) in futures::future::join_all(checks).await {
            assert_eq!(journal, "wal");
            assert_eq!(fk, "1");
            assert_eq!(sync, "1", "synchronous=NORMAL");
            assert_eq!(busy, "5000");
        }
    }

    #[tokio::test]
    async fn names_are_unique_and_cids_are_reused_after_removal() {
        let (_d, s) = store();
        let a = s.insert(new_vm("a")).await.unwrap();
        let b = s.insert(new_vm("b")).await.unwrap();
        assert_eq!((a.vsock_cid, b.vsock_cid), (3, 4));
        assert_eq!(a.state(), VmState::Creating);
        assert!(matches!(
            s.insert(new_vm("a")).await,
            Err(StoreError::NameTaken(_))
        ));
        assert!(s.remove(a.id()).await.unwrap());
        let c = s.insert(new_vm("c")).await.unwrap();
        assert_eq!(c.vsock_cid, 3);
        let names: Vec<String> = s
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.info.name.to_string())
            .collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[tokio::test]
    async fn state_moves_are_checked_by_the_state_machine() {
        let (_d, s) = store();
        let a = s.insert(new_vm("a")).await.unwrap();
        s.transition(a.id(), VmState::Starting, None).await.unwrap();
        let err = s
            .transition(a.id(), VmState::Creating, None)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("is starting and cannot become creating"),
            "{err}"
        );
        let r = s
            .modify(a.id(), |r| {
                r.info.state = VmState::Running;
                r.pid = Some(42);
                r.info.network = Some(VmNetwork {
                    ip: "10.0.0.2".into(),
                    mac: "06:00:00:00:00:02".into(),
                    tap: "tap0".into(),
                });
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(s.get(a.id()).await.unwrap(), r);
        assert_eq!(r.pid, Some(42));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_wait_for_the_lock_instead_of_failing_busy() {
        let (_d, s) = store();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(s.insert(new_vm(&format!("v{i}"))).await.unwrap().info.id);
        }
        let writers = ids.into_iter().map(|id| {
            let s = s.clone();
            async move {
                for n in 0..5u32 {
                    s.modify(&id, move |r| {
                        r.pid = Some(n);
                        Ok(())
                    })
                    .await?;
                    s.next_event_seq(|_| {}).await?;
                }
                Ok::<_, StoreError>(())
            }
        });
        for r in futures::future::join_all(writers).await {
            r.unwrap();
        }
        assert_eq!(s.next_event_seq(|_| {}).await.unwrap(), 101);
    }

    #[tokio::test]
    async fn a_change_and_its_event_number_commit_together_or_not_at_all() {
        let (_d, s) = store();
        let before = s.write_transactions();
        let (a, created) = s.insert_numbered(new_vm("a"), |_, _| {}).await.unwrap();
        let (r, starting) = s
            .modify_numbered(
                a.id(),
                |r| {
                    r.info.state = VmState::Starting;
                    Ok(())
                },
                |_, _| {},
            )
            .await
            .unwrap();
        assert_eq!((created, starting), (1, 2));
        assert_eq!(r.state(), VmState::Starting);
        assert_eq!(s.write_transactions() - before, 2, "one transaction each");
        // A refused change takes no number.
        let err = s
            .modify_numbered(
                a.id(),
                |r| {
                    r.info.state = VmState::Creating;
                    Ok(())
                },
                |_, _| {},
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::BadTransition { .. }), "{err}");
        assert!(matches!(
            s.insert_numbered(new_vm("a"), |_, _| {}).await,
            Err(StoreError::NameTaken(_))
        ));
        let (removed, deleted) = s.remove_numbered(a.id(), |_| {}).await.unwrap();
        assert!(removed);
        assert_eq!(deleted, 3, "failed changes took no number");
        assert!(s.find(a.id()).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn numbered_writes_hand_their_numbers_on_in_sequence_order() {
        let (_d, s) = store();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ids = Vec::new();
        for i in 0..10 {
            let tx = tx.clone();
            let (rec, _) = s
                .insert_numbered(new_vm(&format!("v{i}")), move |_, seq| {
                    let _ = tx.send(seq);
                })
                .await
                .unwrap();
            ids.push(rec.info.id);
        }
        // Concurrent writers of every numbered kind, racing for the one writer connection.
        let writers = ids.into_iter().map(|id| {
            let (s, tx) = (s.clone(), tx.clone());
            async move {
                for n in 0..5u32 {
                    let t = tx.clone();
                    s.modify_numbered(
                        &id,
                        move |r| {
                            r.pid = Some(n);
                            Ok(())
                        },
                        move |_, seq| {
                            let _ = t.send(seq);
                        },
                    )
                    .await?;
                    let t = tx.clone();
                    s.next_event_seq(move |seq| {
                        let _ = t.send(seq);
                    })
                    .await?;
                }
                let t = tx.clone();
                s.remove_numbered(&id, move |seq| {
                    let _ = t.send(seq);
                })
                .await?;
                Ok::<_, StoreError>(())
            }
        });
        for r in futures::future::join_all(writers).await {
            r.unwrap();
        }
        drop(tx);
        let handed: Vec<u64> = rx.iter().collect();
        assert_eq!(handed, (1..=120).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn event_sequence_increases_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vms.sqlite");
        let s = Store::open(&path, HostId::new("h1").unwrap()).unwrap();
        assert_eq!(s.next_event_seq(|_| {}).await.unwrap(), 1);
        assert_eq!(s.next_event_seq(|_| {}).await.unwrap(), 2);
        drop(s);
        let s = Store::open(&path, HostId::new("h1").unwrap()).unwrap();
        assert_eq!(s.next_event_seq(|_| {}).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn the_database_and_its_wal_files_are_owner_only_in_an_owner_only_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // The test process keeps its ordinary umask (022): the modes come from the store.
        let path = dir.path().join("state/vm-controller/vms.sqlite");
        let s = Store::open(&path, HostId::new("h1").unwrap()).unwrap();
        s.next_event_seq(|_| {}).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        for f in ["vms.sqlite", "vms.sqlite-wal", "vms.sqlite-shm"] {
            assert_eq!(mode(&path.with_file_name(f)), 0o600, "{f}");
        }
    }
}
