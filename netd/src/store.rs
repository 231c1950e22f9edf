//! The lease store: one SQLite file, `<state_dir>/netd/leases.db`.
//!
//! A lease binds a VM id to an address, a MAC and a tap name, plus the VM's port forwards. It is
//! `active` while the VM holds its tap (between `attach` and `detach`) and kept when the VM
//! stops, so the VM comes back with the same address; only a release (VM deleted) removes it.
//! Uniqueness of address, MAC, tap and forwarded host port is enforced by the schema, so even a
//! bug cannot hand one address to two VMs.
//!
//! The file, its connection profile, write serialisation and schema versions are
//! [`banger_sqlite`]'s: the database is created 0600 in a 0700 directory, every connection gets
//! WAL, a busy timeout, foreign keys and `synchronous=NORMAL`, writes take turns in
//! `BEGIN IMMEDIATE` transactions, and [`SCHEMA`] lists the schema's versions (append a step to
//! change it; never edit a released one). Calls run on the blocking thread pool.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use banger_proto::net::{PortForward, Protocol};
use banger_proto::{VmId, VmName};
use banger_sqlite::{Db, Migration, Schema, Step};
use ipnet::Ipv4Net;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::lease;

/// Version 1: the schema since the first release (which already recorded `user_version` 1).
const V1_LEASES_AND_FORWARDS: &str = "
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
";

/// The lease database's schema history, oldest first.
pub const SCHEMA: Schema = Schema {
    name: "lease",
    migrations: &[Migration {
        description: "the leases and port_forwards tables",
        step: Step::Sql(V1_LEASES_AND_FORWARDS),
    }],
};

/// A stored lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The VM.
    pub vm_id: VmId,
    /// Its name.
    pub vm_name: VmName,
    /// Guest address.
    pub ip: Ipv4Addr,
    /// Guest MAC.
    pub mac: String,
    /// Host tap.
    pub tap: String,
    /// Whether the VM holds its tap (attached and not detached since).
    pub active: bool,
    /// Port forwards, sorted.
    pub port_forwards: Vec<PortForward>,
    /// Last attach or detach, ms since the epoch.
    pub updated_at_ms: u64,
}

/// What [`LeaseStore::reserve`] did, so a failed attach can undo it exactly.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The lease as it is now stored (active).
    pub lease: LeaseRow,
    /// The lease before, or `None` when it was created.
    pub previous: Option<LeaseRow>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening, migrating or using the database file failed (see [`banger_sqlite::SqliteError`]).
    #[error(transparent)]
    Db(#[from] banger_sqlite::SqliteError),
    /// A query failed.
    #[error("lease database query failed")]
    Query(#[from] rusqlite::Error),
    /// A stored row is not valid (edited by hand or corrupt).
    #[error("lease database holds an invalid row: {0}")]
    Corrupt(String),
    /// The blocking task died.
    #[error("lease database task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// A host port is already forwarded to another VM.
    #[error("host port {port}/{protocol} is already forwarded to VM {holder}")]
    PortTaken {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: &'static str,
        /// The VM that has it.
        holder: String,
    },
    /// No free address is left.
    #[error("no free address left in {subnet} ({leases} leases)")]
    Exhausted {
        /// The subnet.
        subnet: Ipv4Net,
        /// Leases held.
        leases: usize,
    },
    /// No unused tap name or MAC could be derived.
    #[error("no unused tap name or MAC could be derived for VM {0}")]
    NoName(VmId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<banger_sqlite::SqliteError> for ReserveError {
    fn from(e: banger_sqlite::SqliteError) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

impl From<rusqlite::Error> for ReserveError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// The lease database.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    db: Db,
}

fn proto_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

impl LeaseStore {
    /// Opens (creating when needed, 0600 in a 0700 directory) `<dir>/leases.db`, migrating
    /// it to [`SCHEMA`]'s version. Blocks.
    ///
    /// # Errors
    /// [`StoreError::Db`] when the file cannot be created or opened, a migration fails, or the
    /// file was written by a newer banger (left unchanged).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::open(&dir.join("leases.db"), &SCHEMA)?,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// One lease.
    pub async fn get(&self, vm: VmId) -> Result<Option<LeaseRow>, StoreError> {
        self.db.read_async(move |c| get(c, &vm)).await
    }

    /// The leases of `vms` that exist (one blocking call, one indexed lookup each).
    pub async fn get_many(&self, vms: Vec<VmId>) -> Result<Vec<LeaseRow>, StoreError> {
        self.db
            .read_async(move |c| {
                let mut out = Vec::with_capacity(vms.len());
                for vm in &vms {
                    if let Some(l) = get(c, vm)? {
                        out.push(l);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Every lease, by address.
    pub async fn all(&self) -> Result<Vec<LeaseRow>, StoreError> {
        self.db.read_async(all).await
    }

    /// Creates or updates the lease of `vm`, marks it active and stores `forwards`, in one
    /// transaction. Nothing is written when it fails.
    pub async fn reserve(
        &self,
        vm: VmId,
        name: VmName,
        forwards: Vec<PortForward>,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<Reservation, ReserveError> {
        self.db
            .write_async(move |tx| reserve(tx, &vm, &name, &forwards, subnet, gateway))
            .await
    }

    /// Undoes a reservation: deletes a created lease or restores the previous one.
    pub async fn undo(&self, r: Reservation) -> Result<(), StoreError> {
        self.db
            .write_async(move |tx| {
                tx.execute(
                    "DELETE FROM leases WHERE vm_id = ?1",
                    [r.lease.vm_id.as_str()],
                )?;
                if let Some(prev) = &r.previous {
                    insert(tx, prev)?;
                }
                Ok(())
            })
            .await
    }

    /// Marks the leases of `vms` inactive, and deletes those in `release`.
    pub async fn detach(&self, inactive: Vec<VmId>, release: Vec<VmId>) -> Result<(), StoreError> {
        self.db
            .write_async(move |tx| {
                let now = now_ms_i64();
                for vm in &inactive {
                    tx.execute(
                        "UPDATE leases SET active = 0, updated_at_ms = ?2 WHERE vm_id = ?1",
                        params![vm.as_str(), now],
                    )?;
                }
                for vm in &release {
                    tx.execute("DELETE FROM leases WHERE vm_id = ?1", [vm.as_str()])?;
                }
                Ok(())
            })
            .await
    }
}

fn now_ms_i64() -> i64 {
    i64::try_from(banger_bus::now_ms()).unwrap_or(i64::MAX)
}

fn row_to_lease(
    vm_id: String,
    vm_name: String,
    ip: String,
    mac: String,
    tap: String,
    active: i64,
    updated: i64,
) -> Result<LeaseRow, StoreError> {
    Ok(LeaseRow {
        vm_id: VmId::new(vm_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        vm_name: VmName::new(vm_name).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ip: ip
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("address {ip:?}")))?,
        mac,
        tap,
        active: active != 0,
        port_forwards: Vec::new(),
        updated_at_ms: u64::try_from(updated).unwrap_or(0),
    })
}

type RawRow = (String, String, String, String, String, i64, i64);

const SELECT: &str = "SELECT vm_id, vm_name, ip, mac, tap, active, updated_at_ms FROM leases";

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn forwards(c: &Connection, vm: &VmId) -> Result<Vec<PortForward>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT protocol, host_port, guest_port FROM port_forwards WHERE vm_id = ?1
         ORDER BY protocol, host_port",
    )?;
    let rows = stmt.query_map([vm.as_str()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (p, h, g) = row?;
        let protocol = match p.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(StoreError::Corrupt(format!("protocol {other:?}"))),
        };
        let port = |v: i64| u16::try_from(v).map_err(|_| StoreError::Corrupt(format!("port {v}")));
        out.push(PortForward {
            host_port: port(h)?,
            guest_port: port(g)?,
            protocol,
        });
    }
    Ok(out)
}

fn get(c: &Connection, vm: &VmId) -> Result<Option<LeaseRow>, StoreError> {
    let row = c
        .query_row(&format!("{SELECT} WHERE vm_id = ?1"), [vm.as_str()], raw)
        .optional()?;
    match row {
        None => Ok(None),
        Some((a, b, ip, d, e, f, g)) => {
            let mut l = row_to_lease(a, b, ip, d, e, f, g)?;
            l.port_forwards = forwards(c, vm)?;
            Ok(Some(l))
        }
    }
}

fn all(c: &Connection) -> Result<Vec<LeaseRow>, StoreError> {
    let mut stmt = c.prepare_cached(SELECT)?;
    let raws: Vec<RawRow> = stmt.query_map([], raw)?.collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(raws.len());
    for (a, b, ip, d, e, f, g) in raws {
        let mut l = row_to_lease(a, b, ip, d, e, f, g)?;
        l.port_forwards = forwards(c, &l.vm_id)?;
        out.push(l);
    }
    out.sort_by_key(|l| l.ip);
    Ok(out)
}

fn insert(tx: &Transaction<'_>, l: &LeaseRow) -> Result<(), rusqlite::Error> {
    let now = now_ms_i64();
    tx.execute(
        "INSERT INTO leases (vm_id, vm_name, ip, mac, tap, active, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![
            l.vm_id.as_str(),
            l.vm_name.as_str(),
            l.ip.to_string(),
            l.mac,
            l.tap,
            i64::from(l.active),
            now
        ],
    )?;
    for pf in &l.port_forwards {
        tx.execute(
            "INSERT INTO port_forwards (vm_id, protocol, host_port, guest_port)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                l.vm_id.as_str(),
                proto_str(pf.protocol),
                pf.host_port,
                pf.guest_port
            ],
        )?;
    }
    Ok(())
}

fn reserve(
    tx: &Transaction<'_>,
    vm: &VmId,
    name: &VmName,
    forwards: &[PortForward],
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<Reservation, ReserveError> {
    for pf in forwards {
        let holder: Option<String> = tx
            .query_row(
                "SELECT vm_id FROM port_forwards WHERE protocol = ?1 AND host_port = ?2
                 AND vm_id != ?3",
                params![proto_str(pf.protocol), pf.host_port, vm.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(holder) = holder {
            return Err(ReserveError::PortTaken {
                port: pf.host_port,
                protocol: proto_str(pf.protocol),
                holder,
            });
        }
    }
    let previous = get(tx, vm)?;
    let leases = all(tx)?;
    let others = leases.iter().filter(|l| &l.vm_id != vm);
    let mut sorted = forwards.to_vec();
    sorted.sort_by_key(|p| (proto_str(p.protocol), p.host_port));

    let lease = match &previous {
        Some(prev) => {
            let ip = if lease::is_leasable(subnet, gateway, prev.ip) {
                prev.ip
            } else {
                // The subnet changed since the lease was made: move the VM into the new one.
                let used: HashSet<Ipv4Addr> = others.map(|l| l.ip).collect();
                lease::first_free_ip(subnet, gateway, &used).ok_or(ReserveError::Exhausted {
                    subnet,
                    leases: leases.len(),
                })?
            };
            LeaseRow {
                vm_name: name.clone(),
                ip,
                active: true,
                port_forwards: sorted,
                ..prev.clone()
            }
        }
        None => {
            let ips: HashSet<Ipv4Addr> = leases.iter().map(|l| l.ip).collect();
            let ip =
                lease::first_free_ip(subnet, gateway, &ips).ok_or(ReserveError::Exhausted {
                    subnet,
                    leases: leases.len(),
                })?;
            let taps: HashSet<String> = leases.iter().map(|l| l.tap.clone()).collect();
            let macs: HashSet<String> = leases.iter().map(|l| l.mac.clone()).collect();
            let tap = lease::first_unused(&taps, |n| lease::tap_name(vm, n))
                .ok_or_else(|| ReserveError::NoName(vm.clone()))?;
            let mac = lease::first_unused(&macs, |n| lease::mac(vm, n))
                .ok_or_else(|| ReserveError::NoName(vm.clone()))?;
            LeaseRow {
                vm_id: vm.clone(),
                vm_name: name.clone(),
                ip,
                mac,
                tap,
                active: true,
                port_forwards: sorted,
                updated_at_ms: 0,
            }
        }
    };
    tx.execute("DELETE FROM leases WHERE vm_id = ?1", [vm.as_str()])?;
    insert(tx, &lease)?;
    let stored = get(tx, vm)?.ok_or_else(|| {
        StoreError::Corrupt(format!("lease of {vm} vanished inside its transaction"))
    })?;
    Ok(Reservation {
        lease: stored,
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(n: u8) -> (VmId, VmName) {
        (
            VmId::new(format!("{n:02x}{}", "0".repeat(30))).unwrap(),
            VmName::new(format!("vm{n}")).unwrap(),
        )
    }

    fn subnet() -> (Ipv4Net, Ipv4Addr) {
        ("10.1.0.0/29".parse().unwrap(), Ipv4Addr::new(10, 1, 0, 1))
    }

    fn pf(h: u16, g: u16) -> PortForward {
        PortForward {
            host_port: h,
            guest_port: g,
            protocol: Protocol::Tcp,
        }
    }

    #[tokio::test]
    async fn a_lease_is_stable_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (s, gw) = subnet();
        let (id, name) = vm(1);
        let store = LeaseStore::open(dir.path()).unwrap();
        let first = store
            .reserve(id.clone(), name.clone(), vec![pf(8080, 80)], s, gw)
            .await
            .unwrap();
        assert!(first.previous.is_none());
        assert_eq!(first.lease.ip, Ipv4Addr::new(10, 1, 0, 2));
        assert!(first.lease.active);
        drop(store);
        let store = LeaseStore::open(dir.path()).unwrap();
        let again = store
            .reserve(id.clone(), name, vec![pf(8080, 80)], s, gw)
            .await
            .unwrap();
        assert_eq!(again.lease.ip, first.lease.ip);
        assert_eq!(again.lease.mac, first.lease.mac);
        assert_eq!(again.lease.tap, first.lease.tap);
        assert_eq!(again.lease.port_forwards, vec![pf(8080, 80)]);
    }

    #[tokio::test]
    async fn exhaustion_and_port_conflicts_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (s, gw) = subnet();
        let store = LeaseStore::open(dir.path()).unwrap();
        for n in 1..=5 {
            let (id, name) = vm(n);
            let forwards = if n == 1 { vec![pf(8080, 80)] } else { vec![] };
            store.reserve(id, name, forwards, s, gw).await.unwrap();
        }
        let (id, name) = vm(6);
        let e = store
            .reserve(id.clone(), name, vec![], s, gw)
            .await
            .unwrap_err();
        assert!(matches!(e, ReserveError::Exhausted { .. }), "{e}");
        assert!(store.get(id).await.unwrap().is_none());

        let (id, name) = vm(2);
        let e = store
            .reserve(id.clone(), name, vec![pf(8080, 81)], s, gw)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ReserveError::PortTaken { port: 8080, .. }),
            "{e}"
        );
        assert!(
            store
                .get(id)
                .await
                .unwrap()
                .unwrap()
                .port_forwards
                .is_empty()
        );
    }

    #[tokio::test]
    async fn undo_restores_exactly_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let (s, gw) = subnet();
        let store = LeaseStore::open(dir.path()).unwrap();
        let (id, name) = vm(1);
        let r = store
            .reserve(id.clone(), name.clone(), vec![], s, gw)
            .await
            .unwrap();
        store.undo(r).await.unwrap();
        assert!(store.get(id.clone()).await.unwrap().is_none());

        store
            .reserve(id.clone(), name.clone(), vec![pf(1, 2)], s, gw)
            .await
            .unwrap();
        store.detach(vec![id.clone()], vec![]).await.unwrap();
        let before = store.get(id.clone()).await.unwrap().unwrap();
        assert!(!before.active);
        let r = store
            .reserve(id.clone(), name, vec![pf(3, 4)], s, gw)
            .await
            .unwrap();
        store.undo(r).await.unwrap();
        let after = store.get(id.clone()).await.unwrap().unwrap();
        assert_eq!(
            (after.ip, after.active, after.port_forwards),
            (before.ip, before.active, before.port_forwards)
        );
        store.detach(vec![], vec![id.clone()]).await.unwrap();
        assert!(store.get(id).await.unwrap().is_none());
        assert!(store.all().await.unwrap().is_empty());
    }
}
