//! One lock per VM.
//!
//! Every mutation of a VM (create, start, stop, restart, kill, delete, set, touch), every
//! reconcile pass over it and every stats update holds that VM's lock, so operations on one VM
//! are serialised while different VMs progress in parallel. There is no global mutation lock:
//! the map itself is only locked for the instant it takes to find or insert an entry. A VM is
//! lockable as soon as its id exists (create takes the lock before the record is written).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use banger_proto::VmId;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The held lock of one VM; released on drop.
pub type VmGuard = OwnedMutexGuard<()>;

/// The per-VM lock table.
#[derive(Debug, Default, Clone)]
pub struct VmLocks {
    map: Arc<Mutex<HashMap<VmId, Arc<AsyncMutex<()>>>>>,
}

impl VmLocks {
    /// A new, empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&self, id: &VmId) -> Arc<AsyncMutex<()>> {
        // A poisoned map only means another thread panicked while inserting; the map is still
        // consistent (insert is atomic), so keep using it.
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(id.clone()).or_default().clone()
    }

    /// Waits for and takes VM `id`'s lock.
    pub async fn lock(&self, id: &VmId) -> VmGuard {
        self.entry(id).lock_owned().await
    }

    /// Takes VM `id`'s lock if nobody holds it (reconcile skips busy VMs).
    pub fn try_lock(&self, id: &VmId) -> Option<VmGuard> {
        self.entry(id).try_lock_owned().ok()
    }

    /// Forgets VM `id` (after delete). Holders and waiters keep their handle; a later lock of
    /// the same id gets a fresh entry.
    pub fn forget(&self, id: &VmId) {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(id);
    }

    /// How many VMs have an entry (tests).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::new_vm_id;

    #[tokio::test]
    async fn one_vm_is_exclusive_and_two_vms_are_independent() {
        let locks = VmLocks::new();
        let (a, b) = (new_vm_id(), new_vm_id());
        let held = locks.lock(&a).await;
        assert!(locks.try_lock(&a).is_none(), "a second holder of one vm");
        assert!(locks.try_lock(&b).is_some(), "another vm is not blocked");
        drop(held);
        assert!(locks.try_lock(&a).is_some());
        locks.forget(&a);
        assert_eq!(locks.len(), 1);
    }
}
