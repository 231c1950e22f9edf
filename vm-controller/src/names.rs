//! The lab's VM name directory: one key per VM name in the JetStream key-value bucket
//! [`name_bucket`] (value: a [`NameEntry`], the host and the VM holding it).
//!
//! A controller creates a new VM's key before it writes the VM's record. `kv.create` writes
//! only when the key has no value, and JetStream orders the writes of one key, so of two hosts
//! creating the same name at once exactly one gets it and the other answers "already exists":
//! the race the old check (a `vm.list` gather, then the write) left open. Deleting a VM deletes
//! its key, only while the key still names that VM.
//!
//! Rules for a key that is already there:
//! - held by another host that still has the VM: taken. Its controller's heartbeat key is
//!   proof enough; without one (a live controller's beat may not be in yet, e.g. while a lab's
//!   JetStream cluster forms) its controller is asked for the VM (`vm.get`, 2 s);
//! - held by another host that answers it has no such VM (a stale key), or that nobody answers
//!   for at all (its controller stopped, or it left the lab): taken over (a compare-and-set on
//!   the key's revision, so two takers cannot both win), with a warning. This keeps a host that
//!   left the lab, or died, from holding its names forever. It is what the old gather did too
//!   (a host that did not answer had no names); a host that comes back with such a VM finds the
//!   name held by another at its start-up [`NameDirectory::sync`] and says so;
//! - held by this host: the local database decides (its unique index): [`Claim::Here`], and the
//!   key is pointed at the new VM only once its record is written.
//!
//! A controller that crashed between the key and the record, or between the record's delete
//! and the key's, leaves a key naming a VM of its host that does not exist; the start-up
//! [`NameDirectory::sync`] deletes those (once a minute old: a create in flight is not stale)
//! and writes the missing keys of the host's VMs. A step that could not reach the directory
//! (JetStream down) leaves it to the next sync, which the reconcile loop runs.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation};
use async_nats::jetstream::stream::StorageType;
use banger_bus::Bus;
use banger_bus::RequestError;
use banger_bus::kv::BucketSpec;
use banger_bus::lab::BucketRead;
use banger_proto::op;
use banger_proto::vm::{NameEntry, VmRefRequest, controller_bucket, name_bucket};
use banger_proto::{ErrorCode, HostId, VmId, VmName};
use bytes::Bytes;
use tokio::sync::OnceCell;

/// How often a claim tries again when the key changed under it (a delete or a takeover racing).
const ATTEMPTS: usize = 4;

/// How old a key of this host naming none of its VMs must be before a sync deletes it: a
/// create claims its key a moment before it writes the record, and a sync running in between
/// must not take the key from under it.
const STALE_AFTER_S: i64 = 60;

/// How long a name's holder without a heartbeat gets to answer whether it still has the VM.
const HOLDER_WAIT: Duration = Duration::from_secs(2);

/// How long the start-up sync may take to read the bucket.
const READ_WAIT: Duration = Duration::from_secs(5);

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key now names the new VM: delete it ([`NameDirectory::release`]) if the VM is not
    /// recorded after all.
    Claimed,
    /// The key names a VM of this host: the local database decides; once the VM is recorded,
    /// [`NameDirectory::adopt`] points the key at it.
    Here,
    /// Another live host holds the name.
    Taken {
        /// That host.
        host: HostId,
        /// Its VM.
        id: VmId,
    },
}

/// The directory could not be used (no JetStream, no rights, no quorum, a timeout).
#[derive(Debug, thiserror::Error)]
#[error("name directory {bucket}: {what}: {message}")]
pub struct DirectoryError {
    /// The bucket.
    pub bucket: String,
    /// What was being done.
    pub what: &'static str,
    /// The cause, as the client reported it.
    pub message: String,
}

/// What [`NameDirectory::sync`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Keys written for this host's VMs (missing, stale, or taken over).
    pub written: Vec<VmName>,
    /// Keys of this host naming VMs it no longer has, deleted.
    pub removed: Vec<VmName>,
    /// This host's VMs whose names a live other host holds.
    pub conflicts: Vec<(VmName, HostId)>,
}

/// A key's current value: its entry (`None`: not an entry, e.g. written by hand, held by no
/// live host) and revision.
#[derive(Debug)]
struct Held {
    entry: Option<NameEntry>,
    revision: u64,
    /// When it was written (seconds since the epoch).
    written_s: i64,
}

/// One host's view of the name directory; opened on first use.
#[derive(Debug)]
pub struct NameDirectory {
    bus: Bus,
    host: HostId,
    bucket: String,
    names: OnceCell<kv::Store>,
    controllers: OnceCell<kv::Store>,
    stale_after_s: i64,
}

impl NameDirectory {
    /// The directory of `bus`'s installation, for `host`.
    pub fn new(bus: Bus, host: HostId) -> Self {
        let bucket = name_bucket(bus.subjects().prefix());
        Self {
            bus,
            host,
            bucket,
            names: OnceCell::new(),
            controllers: OnceCell::new(),
            stale_after_s: STALE_AFTER_S,
        }
    }

    /// How old a stale key must be before [`Self::sync`] deletes it (default: a minute).
    #[must_use]
    pub fn stale_after(mut self, age: Duration) -> Self {
        self.stale_after_s = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Claims `name` for this host's new VM `id`.
    pub async fn claim(&self, name: &VmName, id: &VmId) -> Result<Claim, DirectoryError> {
        let store = self.names().await?;
        let value = self.value(name, id)?;
        for _ in 0..ATTEMPTS {
            match store.create(name.as_str(), value.clone()).await {
                Ok(_) => return Ok(Claim::Claimed),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.error("creating the key", &e)),
            }
            let Some(held) = self.holder(store, name).await? else {
                continue; // deleted meanwhile: create again
            };
            if let Some(holder) = &held.entry {
                if holder.host == self.host {
                    return Ok(Claim::Here);
                }
                if self.holds(holder).await? {
                    return Ok(Claim::Taken {
                        host: holder.host.clone(),
                        id: holder.id.clone(),
                    });
                }
            }
            let was = held.entry.map(|e| e.host.to_string()).unwrap_or_default();
            match store
                .update(name.as_str(), value.clone(), held.revision)
                .await
            {
                Ok(_) => {
                    tracing::warn!(vm.name = %name, holder = %was, "taking over a name held by a host whose controller is not running");
                    return Ok(Claim::Claimed);
                }
                // Changed meanwhile (deleted, or another host took it over): look again.
                Err(e) => {
                    tracing::debug!(vm.name = %name, error = %e, "name changed during a takeover")
                }
            }
        }
        Err(DirectoryError {
            bucket: self.bucket.clone(),
            what: "claiming a name",
            message: format!("the key {name} kept changing"),
        })
    }

    /// Points `name`'s key at this host's VM `id` (after [`Claim::Here`] and the record).
    pub async fn adopt(&self, name: &VmName, id: &VmId) -> Result<(), DirectoryError> {
        let store = self.names().await?;
        store
            .put(name.as_str(), self.value(name, id)?)
            .await
            .map(|_| ())
            .map_err(|e| self.error("writing the key", &e))
    }

    /// Deletes `name`'s key if it still names this host's VM `id`.
    pub async fn release(&self, name: &VmName, id: &VmId) -> Result<(), DirectoryError> {
        self.remove(name, id, 0).await.map(|_| ())
    }

    /// Deletes `name`'s key if it still names this host's VM `id` and was written at least
    /// `min_age_s` seconds ago; whether it did.
    async fn remove(
        &self,
        name: &VmName,
        id: &VmId,
        min_age_s: i64,
    ) -> Result<bool, DirectoryError> {
        let store = self.names().await?;
        let Some(Held {
            entry: Some(holder),
            revision,
            written_s,
        }) = self.holder(store, name).await?
        else {
            return Ok(false);
        };
        if holder.host != self.host || &holder.id != id || now_s() - written_s < min_age_s {
            return Ok(false);
        }
        match store
            .delete_expect_revision(name.as_str(), Some(revision))
            .await
        {
            Ok(()) => Ok(true),
            // Changed since it was read: it no longer names this VM.
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(self.error("deleting the key", &e)),
        }
    }

    /// Brings the directory in line with this host's VMs `local`: writes their missing or
    /// stale keys (taking over those of hosts that are not alive), and deletes this host's keys
    /// that name no VM of it.
    pub async fn sync(&self, local: &[(VmName, VmId)]) -> Result<SyncReport, DirectoryError> {
        let store = self.names().await?;
        let mut report = SyncReport::default();
        for (name, id) in local {
            match self.claim(name, id).await? {
                Claim::Claimed => report.written.push(name.clone()),
                Claim::Here => {
                    if self
                        .holder(store, name)
                        .await?
                        .and_then(|h| h.entry)
                        .is_none_or(|h| &h.id != id)
                    {
                        self.adopt(name, id).await?;
                        report.written.push(name.clone());
                    }
                }
                Claim::Taken { host, .. } => {
                    tracing::warn!(vm.name = %name, holder = %host, "this host's vm has a name another host's vm holds: rename one (vm names must be unique in a lab)");
                    report.conflicts.push((name.clone(), host));
                }
            }
        }
        let mine: HashMap<&VmName, &VmId> = local.iter().map(|(n, i)| (n, i)).collect();
        for entry in self.entries().await? {
            if entry.host == self.host
                && mine.get(&entry.name) != Some(&&entry.id)
                && self
                    .remove(&entry.name, &entry.id, self.stale_after_s)
                    .await?
            {
                report.removed.push(entry.name);
            }
        }
        Ok(report)
    }

    /// Every entry of the directory (no consumer: see [`banger_bus::lab::read_bucket`]).
    async fn entries(&self) -> Result<Vec<NameEntry>, DirectoryError> {
        match banger_bus::lab::read_bucket(&self.bus, &self.bucket, READ_WAIT).await {
            BucketRead::Absent => Ok(Vec::new()),
            BucketRead::Unknown => Err(DirectoryError {
                bucket: self.bucket.clone(),
                what: "reading the keys",
                message: format!("no answer within {READ_WAIT:?}"),
            }),
            BucketRead::Values(values) => Ok(values
                .iter()
                .filter_map(|v| serde_json::from_slice(v).ok())
                .collect()),
        }
    }

    /// Who holds `name`: `None` when nobody does.
    async fn holder(
        &self,
        store: &kv::Store,
        name: &VmName,
    ) -> Result<Option<Held>, DirectoryError> {
        let entry = store
            .entry(name.as_str())
            .await
            .map_err(|e| self.error("reading the key", &e))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| Held {
                entry: serde_json::from_slice(&e.value).ok(),
                revision: e.revision,
                written_s: e.created.unix_timestamp(),
            }))
    }

    /// Whether `holder` still holds its name: its controller's heartbeat key exists, or, without
    /// one (JetStream may not have taken a live controller's beat yet: a lab's cluster forming),
    /// its controller answers that it has that VM. `false` only when it answers that it does not
    /// (a stale key), or nobody answers for it at all.
    async fn holds(&self, holder: &NameEntry) -> Result<bool, DirectoryError> {
        if self.beating(&holder.host).await? {
            return Ok(true);
        }
        let asked = self
            .bus
            .call::<op::vm::Get>(
                &holder.host,
                &VmRefRequest {
                    id: holder.id.clone(),
                },
                HOLDER_WAIT,
            )
            .await;
        Ok(match asked {
            Ok(_) => true,
            Err(RequestError::Remote(e)) if e.code == ErrorCode::NotFound => false,
            Err(RequestError::NoResponders { .. } | RequestError::Timeout { .. }) => false,
            // Answered, but not clearly: it is there, so the name stays its.
            Err(e) => {
                tracing::debug!(vm.name = %holder.name, holder = %holder.host, error = %e, "asking a name's holder");
                true
            }
        })
    }

    /// Whether `host`'s controller has a heartbeat key.
    async fn beating(&self, host: &HostId) -> Result<bool, DirectoryError> {
        let bucket = controller_bucket(self.bus.subjects().prefix());
        let store = self
            .controllers
            .get_or_try_init(|| async {
                banger_bus::kv::open(
                    &self.bus,
                    &bucket,
                    banger_bus::heartbeat::bucket_spec(crate::presence::MAX_AGE),
                )
                .await
            })
            .await
            .map_err(|message| DirectoryError {
                bucket: bucket.clone(),
                what: "opening the heartbeat bucket",
                message,
            })?;
        store
            .get(host.as_str())
            .await
            .map(|v| v.is_some())
            .map_err(|e| self.error("reading a heartbeat", &e))
    }

    async fn names(&self) -> Result<&kv::Store, DirectoryError> {
        self.names
            .get_or_try_init(|| async {
                banger_bus::kv::open(
                    &self.bus,
                    &self.bucket,
                    BucketSpec {
                        description: "banger: VM name -> the host and VM holding it",
                        storage: StorageType::File,
                        max_age: Duration::ZERO,
                        replicas: None,
                    },
                )
                .await
            })
            .await
            .map_err(|message| DirectoryError {
                bucket: self.bucket.clone(),
                what: "opening the bucket",
                message,
            })
    }

    fn value(&self, name: &VmName, id: &VmId) -> Result<Bytes, DirectoryError> {
        let entry = NameEntry {
            name: name.clone(),
            host: self.host.clone(),
            id: id.clone(),
        };
        serde_json::to_vec(&entry)
            .map(Into::into)
            .map_err(|e| self.error("encoding the entry", &e))
    }

    fn error(&self, what: &'static str, e: &dyn std::fmt::Display) -> DirectoryError {
        DirectoryError {
            bucket: self.bucket.clone(),
            what,
            message: e.to_string(),
        }
    }
}

/// Seconds since the epoch.
fn now_s() -> i64 {
    i64::try_from(banger_bus::now_ms() / 1000).unwrap_or(i64::MAX)
}
