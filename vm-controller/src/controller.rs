//! The controller: the VM records of one host, the per-VM locks and the peers every operation
//! uses. Operations live one per file under [`crate::ops`]; the shared halves of start and stop
//! in [`crate::boot`] and [`crate::halt`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use banger_proto::event::EventKind;
use banger_proto::vm::{VmInfo, VmOpReply, VmState};
use banger_proto::{HostId, VmId};

use crate::config::{ControllerConfig, Dirs, VmPaths};
use crate::deps::{AgentApi, EventSink, Events, LabApi, NetApi, StoreApi};
use crate::error::{LookupError, RecordError};
use crate::locks::{VmGuard, VmLocks};
use crate::store::{Store, StoreError, VmRecord};
use crate::vmm::Vmm;

/// Everything a controller is built from: its configuration, its database and its peers. The
/// service builds it with the bus implementations; tests with doubles.
pub struct ControllerParts {
    /// This host.
    pub host: HostId,
    /// The `[vm-controller]` table.
    pub config: ControllerConfig,
    /// State and runtime directories.
    pub dirs: Dirs,
    /// The VM records.
    pub db: Store,
    /// The hypervisor.
    pub vmm: Arc<dyn Vmm>,
    /// stord.
    pub stord: Arc<dyn StoreApi>,
    /// netd.
    pub netd: Arc<dyn NetApi>,
    /// The guest agent.
    pub agent: Arc<dyn AgentApi>,
    /// The other controllers.
    pub lab: Arc<dyn LabApi>,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
}

pub(crate) struct Inner {
    pub(crate) host: HostId,
    pub(crate) config: ControllerConfig,
    pub(crate) dirs: Dirs,
    pub(crate) db: Store,
    pub(crate) locks: VmLocks,
    pub(crate) vmm: Arc<dyn Vmm>,
    pub(crate) stord: Arc<dyn StoreApi>,
    pub(crate) netd: Arc<dyn NetApi>,
    pub(crate) agent: Arc<dyn AgentApi>,
    pub(crate) lab: Arc<dyn LabApi>,
    pub(crate) events: Events,
    /// The last health each VM's agent reported (`true` = healthy), to publish `health` events
    /// on changes only.
    pub(crate) last_health: Mutex<HashMap<VmId, bool>>,
    /// The running VMs watched for a dead guest or hypervisor ([`crate::watch`]).
    pub(crate) watched: Mutex<HashMap<VmId, crate::watch::Watch>>,
}

/// The VM controller of one host. Cheap to clone; every clone is the same controller.
#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("host", &self.inner.host)
            .field("db", &self.inner.db)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller over `parts`.
    pub fn new(parts: ControllerParts) -> Self {
        let events = Events::new(parts.events, parts.db.clone());
        Self {
            inner: Arc::new(Inner {
                host: parts.host,
                config: parts.config,
                dirs: parts.dirs,
                db: parts.db,
                locks: VmLocks::new(),
                vmm: parts.vmm,
                stord: parts.stord,
                netd: parts.netd,
                agent: parts.agent,
                lab: parts.lab,
                events,
                last_health: Mutex::default(),
                watched: Mutex::default(),
            }),
        }
    }

    /// This host.
    pub fn host(&self) -> &HostId {
        &self.inner.host
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.inner.config
    }

    /// `reply`, saying which hypervisor this controller runs (the CLI's SIMULATED banner).
    pub fn with_vmm(&self, mut reply: VmOpReply) -> VmOpReply {
        reply.vmm = Some(self.config().vmm.as_str().to_owned());
        reply
    }

    /// The VM records (tests inspect and tamper with them).
    pub fn db(&self) -> &Store {
        &self.inner.db
    }

    /// The paths of VM `id`.
    pub fn paths(&self, id: &VmId) -> VmPaths {
        self.inner.dirs.vm(id)
    }

    /// Waits for and takes VM `id`'s lock.
    pub(crate) async fn lock(&self, id: &VmId) -> VmGuard {
        self.inner.locks.lock(id).await
    }

    /// Takes VM `id`'s lock when nobody holds it.
    pub(crate) fn try_lock(&self, id: &VmId) -> Option<VmGuard> {
        self.inner.locks.try_lock(id)
    }

    /// VM `id` read under its lock (the caller holds it).
    pub(crate) async fn record(&self, id: &VmId) -> Result<VmRecord, LookupError> {
        self.inner
            .db
            .get(id)
            .await
            .map_err(|e| LookupError::new(e, &self.inner.host))
    }

    /// Publishes `kind` with `vm`'s snapshot.
    pub(crate) async fn emit(&self, kind: EventKind, vm: &VmInfo) {
        self.inner.events.emit(kind, vm).await;
    }

    /// Moves VM `id` to `to` (checked by the state machine) and publishes `kind`, numbered in
    /// the same write transaction as the move.
    pub(crate) async fn transition_and_emit(
        &self,
        id: &VmId,
        to: VmState,
        reason: Option<String>,
        kind: EventKind,
    ) -> Result<VmRecord, RecordError> {
        self.modify_and_emit(id, kind, move |r| {
            r.info.state = to;
            r.info.reason = reason;
            Ok(())
        })
        .await
    }

    /// Applies `change` to VM `id` (see [`Store::modify`]) and publishes `kind` with the new
    /// snapshot, numbered in the same write transaction as the change.
    pub(crate) async fn modify_and_emit<F>(
        &self,
        id: &VmId,
        kind: EventKind,
        change: F,
    ) -> Result<VmRecord, RecordError>
    where
        F: FnOnce(&mut VmRecord) -> Result<(), StoreError> + Send + 'static,
    {
        self.inner
            .events
            .commit(kind, |h| {
                self.inner
                    .db
                    .modify_numbered(id, change, move |rec, seq| h.post(&rec.info, seq))
            })
            .await
            .map_err(|e| self.store_error(e))
    }

    /// A failed write of a record, naming this host where the message needs it.
    pub(crate) fn store_error(&self, e: StoreError) -> RecordError {
        RecordError::new(e, &self.inner.host)
    }
}

/// Milliseconds as a `u64`, for notes and logs.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
