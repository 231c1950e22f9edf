//! State shared by dnsd's tasks and bus operations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::registry::ZoneStore;

/// What every part of dnsd shares.
pub struct State {
    /// The zone: registry for updaters, snapshot for readers.
    pub store: ZoneStore,
    /// The addresses answering DNS (UDP and TCP each).
    pub listeners: Vec<SocketAddr>,
    /// Last completed rebuild from `vm.list`, ms since the epoch; 0 = never.
    last_rebuild_ms: AtomicU64,
    /// Wakes the rebuild loop early (an event sequence gap).
    pub rebuild_now: Notify,
}

impl State {
    /// New shared state.
    pub fn new(store: ZoneStore, listeners: Vec<SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            store,
            listeners,
            last_rebuild_ms: AtomicU64::new(0),
            rebuild_now: Notify::new(),
        })
    }

    /// Records a completed rebuild.
    pub fn rebuilt_at(&self, ms: u64) {
        self.last_rebuild_ms.store(ms, Ordering::Relaxed);
    }

    /// The last completed rebuild, if any.
    pub fn last_rebuild_ms(&self) -> Option<u64> {
        match self.last_rebuild_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }
}
