//! What dnsd knows about running VMs, and how events and `vm.list` rebuilds merge into it.
//!
//! Events make reactions fast; rebuilds from `vm.list` make them correct. The two race: a list
//! answer can be older than an event that arrived while the gather was in flight. Every change
//! therefore carries a local generation number, and a rebuild that began at generation `g`
//! never overrides a VM touched by an event after `g` (a removal leaves a tombstone for that).
//! Within one VM, an event whose snapshot is older (`updated_at_ms`, the owning controller's
//! clock) than what is already known is ignored, so a late event cannot resurrect a record.
//!
//! A host that did not answer a gather keeps its records: dnsd does not wipe what it cannot
//! see. Every change to what is served is also recorded as a [`Change`]; the [`ZoneStore`]
//! applies a batch's changes to the current [`Zone`] snapshot ([`Zone::apply`], in proportion to
//! the names touched) and publishes the result; queries read the snapshot and never take the
//! registry's lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use banger_proto::event::EventKind;
use banger_proto::vm::{ListVmsReply, VmInfo, VmState};
use banger_proto::{HostId, VmId};

use crate::zone::{Change, VmEntry, Zone, ZoneError, ZoneSettings};

/// What is known about one VM id: its record, or a tombstone (`entry: None`).
#[derive(Debug, Clone)]
struct Slot {
    entry: Option<VmEntry>,
    host: HostId,
    generation: u64,
    updated_at_ms: u64,
}

/// The VMs that should be served.
#[derive(Debug, Default)]
pub struct Registry {
    slots: HashMap<VmId, Slot>,
    generation: u64,
    /// Last event sequence number seen per host, to notice gaps.
    last_seq: HashMap<HostId, u64>,
    /// Changes to the served VMs not yet published, in order.
    changes: Vec<Change>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOutcome {
    /// Whether the served records changed.
    pub changed: bool,
    /// Whether events of this host were missed (a sequence gap): rebuild soon.
    pub gap: bool,
}

/// The address a VM should be served at, when it should be served at all.
pub fn served_addr(vm: &VmInfo) -> Option<IpAddr> {
    if vm.state != VmState::Running {
        return None;
    }
    let net = vm.network.as_ref()?;
    match net.ip.parse::<IpAddr>() {
        Ok(addr) => Some(addr),
        Err(e) => {
            tracing::warn!(vm = %vm.name, ip = %net.ip, error = %e, "VM address is not an IP address; not served");
            None
        }
    }
}

fn entry_of(vm: &VmInfo) -> Option<VmEntry> {
    served_addr(vm).map(|addr| VmEntry {
        id: vm.id.clone(),
        name: vm.name.clone(),
        host: vm.host.clone(),
        addr,
    })
}

impl Registry {
    /// The current generation; pass it to [`Registry::apply_list`] for a gather started now.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Applies one lifecycle event: `started` (and `health`) serve a running VM, `stopped` and
    /// `deleted` remove it, `failed` removes it unless it is still running; other kinds change
    /// nothing.
    pub fn apply_event(&mut self, kind: EventKind, seq: u64, vm: &VmInfo) -> EventOutcome {
        let gap = match self.last_seq.insert(vm.host.clone(), seq) {
            Some(last) => seq > last.saturating_add(1),
            None => false,
        };
        let wanted = match kind {
            EventKind::Started | EventKind::Health => entry_of(vm),
            EventKind::Stopped | EventKind::Deleted => None,
            EventKind::Failed => entry_of(vm),
            EventKind::Created | EventKind::Starting | EventKind::Stopping => {
                return EventOutcome {
                    changed: false,
                    gap,
                };
            }
        };
        if let Some(slot) = self.slots.get(&vm.id)
            && vm.updated_at_ms < slot.updated_at_ms
        {
            tracing::debug!(vm = %vm.name, %kind, "ignoring an event older than what is known");
            return EventOutcome {
                changed: false,
                gap,
            };
        }
        let before = self.slots.get(&vm.id).and_then(|s| s.entry.clone());
        let changed = before != wanted;
        if changed {
            self.record_change(before, wanted.clone());
        }
        self.generation += 1;
        self.slots.insert(
            vm.id.clone(),
            Slot {
                entry: wanted.clone(),
                host: vm.host.clone(),
                generation: self.generation,
                updated_at_ms: vm.updated_at_ms,
            },
        );
        EventOutcome { changed, gap }
    }

    /// Records that a VM's served entry went from `before` to `after` (which differ).
    fn record_change(&mut self, before: Option<VmEntry>, after: Option<VmEntry>) {
        self.changes.extend(before.map(Change::Remove));
        self.changes.extend(after.map(Change::Add));
    }

    /// The changes recorded since the last call, in order.
    fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Replaces the VMs of every host that answered a gather begun at generation `since`. A VM
    /// touched by an event after `since` keeps what the event said. Hosts that did not answer
    /// keep their records. Returns whether the served records changed.
    pub fn apply_list(&mut self, since: u64, replies: &[ListVmsReply]) -> bool {
        let mut changed = false;
        for reply in replies {
            let listed: HashMap<&VmId, &VmInfo> = reply.vms.iter().map(|v| (&v.id, v)).collect();
            // Drop what the host no longer reports, unless an event since says otherwise.
            let changes = &mut self.changes;
            self.slots.retain(|id, slot| {
                let keep =
                    slot.host != reply.host || slot.generation > since || listed.contains_key(id);
                if !keep && let Some(gone) = slot.entry.take() {
                    changes.push(Change::Remove(gone));
                    changed = true;
                }
                keep
            });
            for vm in &reply.vms {
                if vm.host != reply.host {
                    tracing::warn!(vm = %vm.name, host = %reply.host, owner = %vm.host, "vm.list answer holds another host's VM; skipped");
                    continue;
                }
                if let Some(slot) = self.slots.get(&vm.id)
                    && (slot.generation > since || vm.updated_at_ms < slot.updated_at_ms)
                {
                    continue;
                }
                let wanted = entry_of(vm);
                let before = self.slots.get(&vm.id).and_then(|s| s.entry.clone());
                if before != wanted {
                    self.record_change(before, wanted.clone());
                    changed = true;
                }
                self.slots.insert(
                    vm.id.clone(),
                    Slot {
                        entry: wanted,
                        host: vm.host.clone(),
                        generation: since,
                        updated_at_ms: vm.updated_at_ms,
                    },
                );
            }
        }
        // Tombstones older than this gather have done their job: every list from now on was
        // taken after them.
        self.slots
            .retain(|_, slot| slot.entry.is_some() || slot.generation > since);
        changed
    }

    /// The VMs served, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &VmEntry> {
        self.slots.values().filter_map(|s| s.entry.as_ref())
    }

    /// How many slots (records and tombstones) are held; for tests.
    #[cfg(test)]
    fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

/// The registry behind a lock for updaters, and the current zone snapshot for readers.
pub struct ZoneStore {
    settings: ZoneSettings,
    registry: Mutex<Registry>,
    published: Mutex<Published>,
    current: Arc<ArcSwap<Zone>>,
}

/// What the last publication left behind.
struct Published {
    /// The serial of the current snapshot.
    serial: u32,
    /// A publication failed, so the current snapshot misses changes the registry has already
    /// forgotten: the next one is built whole from the registry.
    stale: bool,
}

impl ZoneStore {
    /// An empty zone. The SOA serial starts at `first_serial` (the start time in seconds, so a
    /// restarted dnsd's serial keeps increasing) and grows by one per change.
    pub fn new(settings: ZoneSettings, first_serial: u32) -> Result<Self, ZoneError> {
        let zone = Zone::build(&settings, first_serial, [])?;
        Ok(Self {
            settings,
            registry: Mutex::new(Registry::default()),
            published: Mutex::new(Published {
                serial: first_serial,
                stale: false,
            }),
            current: Arc::new(ArcSwap::from_pointee(zone)),
        })
    }

    /// The snapshot cell the DNS handler reads.
    pub fn current(&self) -> Arc<ArcSwap<Zone>> {
        Arc::clone(&self.current)
    }

    /// The zone being served now.
    pub fn snapshot(&self) -> Arc<Zone> {
        self.current.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves a registry that is still consistent (every
        // mutation is a single insert or retain, recorded changes are published by the next
        // change or, if lost in a failed publication, replaced by a whole rebuild), so a
        // poisoned lock is safe to reuse.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies an event and republishes the zone when it changed.
    pub fn apply_event(
        &self,
        kind: EventKind,
        seq: u64,
        vm: &VmInfo,
    ) -> Result<EventOutcome, ZoneError> {
        let outcomes = self.apply_events([(kind, seq, vm)])?;
        Ok(outcomes.into_iter().next().unwrap_or(EventOutcome {
            changed: false,
            gap: false,
        }))
    }

    /// Applies a batch of events in order and republishes the zone once if any changed it:
    /// under an event storm one snapshot is published per batch, not per event.
    pub fn apply_events<'a>(
        &self,
        events: impl IntoIterator<Item = (EventKind, u64, &'a VmInfo)>,
    ) -> Result<Vec<EventOutcome>, ZoneError> {
        let mut reg = self.lock();
        let outcomes: Vec<EventOutcome> = events
            .into_iter()
            .map(|(kind, seq, vm)| reg.apply_event(kind, seq, vm))
            .collect();
        if outcomes.iter().any(|o| o.changed) {
            self.publish(&mut reg)?;
        }
        Ok(outcomes)
    }

    /// The generation to pass to [`ZoneStore::apply_list`] for a gather starting now.
    pub fn generation(&self) -> u64 {
        self.lock().generation()
    }

    /// Applies a gather's answers and republishes the zone when it changed.
    pub fn apply_list(&self, since: u64, replies: &[ListVmsReply]) -> Result<bool, ZoneError> {
        let mut reg = self.lock();
        let changed = reg.apply_list(since, replies);
        if changed {
            self.publish(&mut reg)?;
        }
        Ok(changed)
    }

    /// Applies the changes `reg` recorded to the current snapshot and swaps the result in. The
    /// caller holds `reg`'s lock, so snapshots are published in the order of the changes and the
    /// current snapshot is always the registry's state before them.
    fn publish(&self, reg: &mut Registry) -> Result<(), ZoneError> {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = published.serial.wrapping_add(1);
        let changes = reg.take_changes();
        // Until this publication succeeds the changes exist nowhere else: should it fail (or
        // panic), the next one rebuilds the zone whole.
        let rebuild = std::mem::replace(&mut published.stale, true);
        let zone = if rebuild {
            Zone::build(&self.settings, next, reg.entries())
        } else {
            self.current.load().apply(&self.settings, next, &changes)
        };
        let zone = zone?;
        published.serial = next;
        published.stale = false;
        self.current.store(Arc::new(zone));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use banger_proto::vm::VmNetwork;
    use banger_proto::{CpuCount, ImageName, MemMib, VmName};

    use super::*;

    fn vm(id: char, name: &str, host: &str, state: VmState, ip: Option<&str>, at: u64) -> VmInfo {
        VmInfo {
            id: VmId::new(id.to_string().repeat(32)).unwrap(),
            name: VmName::new(name).unwrap(),
            host: HostId::new(host).unwrap(),
            state,
            image: ImageName::new("debian").unwrap(),
            cpus: CpuCount::new(1).unwrap(),
            memory_mib: MemMib::new(512).unwrap(),
            disk_mib: MemMib::new(1024).unwrap(),
            network: ip.map(|ip| VmNetwork {
                ip: ip.into(),
                mac: "06:00:ac:10:00:02".into(),
                tap: "tap0".into(),
            }),
            port_forwards: vec![],
            reason: None,
            created_at_ms: 1,
            updated_at_ms: at,
            started_at_ms: Some(1),
            touched_at_ms: None,
        }
    }

    fn names(r: &Registry) -> Vec<String> {
        let mut v: Vec<String> = r
            .entries()
            .map(|e| format!("{}@{}", e.name, e.addr))
            .collect();
        v.sort();
        v
    }

    fn reply(host: &str, vms: Vec<VmInfo>) -> ListVmsReply {
        ListVmsReply::new(HostId::new(host).unwrap(), vms)
    }

    const RUN: VmState = VmState::Running;

    #[test]
    fn started_adds_and_stopped_or_deleted_removes() {
        let mut r = Registry::default();
        let web = vm('a', "web", "h1", RUN, Some("10.0.0.2"), 10);
        assert!(r.apply_event(EventKind::Started, 1, &web).changed);
        assert_eq!(names(&r), ["web@10.0.0.2"]);
        // A repeated event changes nothing.
        assert!(!r.apply_event(EventKind::Started, 2, &web).changed);
        let stopped = vm('a', "web", "h1", VmState::Stopped, Some("10.0.0.2"), 11);
        assert!(r.apply_event(EventKind::Stopped, 3, &stopped).changed);
        assert!(names(&r).is_empty());
        assert!(
            r.apply_event(
                EventKind::Started,
                4,
                &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 12)
            )
            .changed
        );
        let deleted = vm('a', "web", "h1", VmState::Deleting, None, 13);
        assert!(r.apply_event(EventKind::Deleted, 5, &deleted).changed);
        assert!(names(&r).is_empty());
    }

    #[test]
    fn failed_removes_only_a_vm_that_is_not_running() {
        let mut r = Registry::default();
        r.apply_event(
            EventKind::Started,
            1,
            &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 10),
        );
        // A failed health probe on a running VM keeps it served.
        assert!(
            !r.apply_event(
                EventKind::Failed,
                2,
                &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 11)
            )
            .changed
        );
        assert_eq!(names(&r).len(), 1);
        assert!(
            r.apply_event(
                EventKind::Failed,
                3,
                &vm('a', "web", "h1", VmState::Failed, Some("10.0.0.2"), 12)
            )
            .changed
        );
        assert!(names(&r).is_empty());
    }

    #[test]
    fn a_started_event_without_an_address_serves_nothing() {
        let mut r = Registry::default();
        assert!(
            !r.apply_event(EventKind::Started, 1, &vm('a', "web", "h1", RUN, None, 1))
                .changed
        );
        assert!(
            !r.apply_event(
                EventKind::Started,
                2,
                &vm('b', "db", "h1", RUN, Some("not-an-ip"), 1)
            )
            .changed
        );
        assert!(names(&r).is_empty());
    }

    #[test]
    fn an_older_event_cannot_resurrect_a_stopped_vm() {
        let mut r = Registry::default();
        r.apply_event(
            EventKind::Stopped,
            2,
            &vm('a', "web", "h1", VmState::Stopped, Some("10.0.0.2"), 20),
        );
        assert!(
            !r.apply_event(
                EventKind::Started,
                1,
                &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 10)
            )
            .changed
        );
        assert!(names(&r).is_empty());
    }

    #[test]
    fn sequence_gaps_are_reported() {
        let mut r = Registry::default();
        let v = vm('a', "web", "h1", VmState::Creating, None, 1);
        assert!(!r.apply_event(EventKind::Created, 5, &v).gap);
        assert!(!r.apply_event(EventKind::Created, 6, &v).gap);
        assert!(r.apply_event(EventKind::Created, 9, &v).gap);
        // A controller restart (sequence back to 1) is not a gap.
        assert!(!r.apply_event(EventKind::Created, 1, &v).gap);
    }

    #[test]
    fn a_list_replaces_the_answering_hosts_vms_and_keeps_silent_hosts() {
        let mut r = Registry::default();
        r.apply_event(
            EventKind::Started,
            1,
            &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 1),
        );
        r.apply_event(
            EventKind::Started,
            1,
            &vm('b', "db", "h2", RUN, Some("10.0.1.2"), 1),
        );
        let g = r.generation();
        // h1 answers with a different VM; h2 does not answer at all.
        let changed = r.apply_list(
            g,
            &[reply(
                "h1",
                vec![
                    vm('c', "api", "h1", RUN, Some("10.0.0.3"), 2),
                    vm('d', "off", "h1", VmState::Stopped, Some("10.0.0.4"), 2),
                ],
            )],
        );
        assert!(changed);
        assert_eq!(names(&r), ["api@10.0.0.3", "db@10.0.1.2"]);
        // The same list again changes nothing.
        let g = r.generation();
        assert!(!r.apply_list(
            g,
            &[reply(
                "h1",
                vec![vm('c', "api", "h1", RUN, Some("10.0.0.3"), 2)]
            )]
        ));
        assert_eq!(r.slot_count(), 2);
    }

    #[test]
    fn events_during_a_gather_win_over_its_answers() {
        let mut r = Registry::default();
        let g = r.generation();
        // While the gather is in flight: web starts, db stops.
        r.apply_event(
            EventKind::Started,
            1,
            &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 5),
        );
        r.apply_event(
            EventKind::Stopped,
            2,
            &vm('b', "db", "h1", VmState::Stopped, Some("10.0.0.3"), 5),
        );
        // The (older) answer knows neither change.
        r.apply_list(
            g,
            &[reply(
                "h1",
                vec![vm('b', "db", "h1", RUN, Some("10.0.0.3"), 4)],
            )],
        );
        assert_eq!(names(&r), ["web@10.0.0.2"]);
        // The tombstone outlives that gather but not the next one.
        assert_eq!(r.slot_count(), 2);
        let g = r.generation();
        r.apply_list(
            g,
            &[reply(
                "h1",
                vec![vm('a', "web", "h1", RUN, Some("10.0.0.2"), 5)],
            )],
        );
        assert_eq!(r.slot_count(), 1);
    }

    #[test]
    fn the_store_publishes_a_new_serial_per_change() {
        let s = ZoneStore::new(
            ZoneSettings {
                ttl: 5,
                negative_ttl: 5,
                ns_name: hickory_server::proto::rr::Name::from_ascii("localhost.").unwrap(),
            },
            100,
        )
        .unwrap();
        assert_eq!(s.snapshot().serial(), 100);
        s.apply_event(
            EventKind::Started,
            1,
            &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 1),
        )
        .unwrap();
        assert_eq!(s.snapshot().serial(), 101);
        assert_eq!(s.snapshot().records().len(), 2);
        s.apply_event(
            EventKind::Started,
            2,
            &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 1),
        )
        .unwrap();
        assert_eq!(s.snapshot().serial(), 101, "no change, no new serial");
    }

    fn store() -> ZoneStore {
        ZoneStore::new(
            ZoneSettings {
                ttl: 5,
                negative_ttl: 5,
                ns_name: hickory_server::proto::rr::Name::from_ascii("localhost.").unwrap(),
            },
            1,
        )
        .unwrap()
    }

    /// Updates never block queries: with the registry locked (an update in progress, as long
    /// as it likes) the DNS handler still answers, from the last published snapshot; and a
    /// reader holding a snapshot does not stop an update from publishing the next one. If the
    /// handler took the updaters' lock the query thread would hang and `recv_timeout` fail.
    #[test]
    fn queries_are_answered_while_an_update_holds_the_registry() {
        use hickory_server::proto::rr::{LowerName, Name, RecordType};
        use hickory_server::zone_handler::{LookupControlFlow, LookupOptions, ZoneHandler};

        use crate::zone::VmZoneHandler;

        let s = Arc::new(store());
        s.apply_event(
            EventKind::Started,
            1,
            &vm('a', "web", "h1", RUN, Some("10.0.0.2"), 1),
        )
        .unwrap();
        let handler = VmZoneHandler::new(s.current());
        let held = s.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let query = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let name = LowerName::new(&Name::from_ascii("web.vm.").unwrap());
            let answer =
                rt.block_on(handler.lookup(&name, RecordType::A, None, LookupOptions::default()));
            let addrs: Vec<String> = match answer {
                LookupControlFlow::Continue(Ok(l)) => {
                    l.iter().map(|r| r.data.to_string()).collect()
                }
                _ => Vec::new(),
            };
            tx.send(addrs).unwrap();
        });
        let addrs = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the query was answered while the registry was locked");
        assert_eq!(addrs, ["10.0.0.2"]);
        drop(held);
        query.join().unwrap();

        let reader = s.snapshot();
        s.apply_event(
            EventKind::Stopped,
            2,
            &vm('a', "web", "h1", VmState::Stopped, Some("10.0.0.2"), 2),
        )
        .unwrap();
        assert_eq!(reader.records().len(), 2, "a reader keeps its snapshot");
        assert!(
            s.snapshot().records().is_empty(),
            "the update was published"
        );
    }

    #[test]
    fn a_batch_of_events_publishes_one_snapshot() {
        let s = store();
        let web = vm('a', "web", "h1", RUN, Some("10.0.0.2"), 1);
        let db = vm('b', "db", "h1", RUN, Some("10.0.0.3"), 1);
        let web_stopped = vm('a', "web", "h1", VmState::Stopped, Some("10.0.0.2"), 2);
        let outcomes = s
            .apply_events([
                (EventKind::Started, 1, &web),
                (EventKind::Started, 2, &db),
                (EventKind::Stopped, 3, &web_stopped),
            ])
            .unwrap();
        assert!(outcomes.iter().all(|o| o.changed && !o.gap));
        assert_eq!(s.snapshot().serial(), 2, "one new serial for the batch");
        let snap = s.snapshot();
        let records = snap.records();
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db.h1.vm.", "db.vm."]);
    }

    /// The snapshot the store maintains change by change is the zone built whole from the
    /// registry, after every step of 2,000 random events (late, repeated, without addresses,
    /// IPv4 and IPv6, a VM named like a host) and gathers racing them (seeded, reproducible).
    #[test]
    fn incremental_snapshots_equal_a_whole_rebuild() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let s = store();
        let mut rng = StdRng::seed_from_u64(0x00d5_9e7f);
        let ids = ['a', 'b', 'c', 'd', 'e', 'f', '1', '2', '3', '4'];
        let names = ["web", "db", "lab2", "web"];
        let hosts = ["h1", "lab2"];
        let ips = [None, Some("10.0.0.2"), Some("10.0.0.3"), Some("fd00::2")];
        let mut clock = 10u64;
        let mut random_vm = |rng: &mut StdRng| {
            let i = rng.random_range(0..ids.len());
            let state = if rng.random_bool(0.6) {
                RUN
            } else {
                VmState::Stopped
            };
            clock += 1;
            let at = clock.saturating_sub(rng.random_range(0..4));
            vm(
                ids[i],
                names[i % names.len()],
                hosts[i % hosts.len()],
                state,
                ips[rng.random_range(0..ips.len())],
                at,
            )
        };
        let kinds = [
            EventKind::Started,
            EventKind::Health,
            EventKind::Stopped,
            EventKind::Deleted,
            EventKind::Failed,
            EventKind::Created,
        ];
        let mut pending_gather: Option<u64> = None;
        for step in 0..2_000u64 {
            if rng.random_bool(0.05) {
                // A gather's answers, possibly taken before events applied meanwhile.
                let since = pending_gather.take().unwrap_or_else(|| s.generation());
                let mut replies: Vec<ListVmsReply> = Vec::new();
                for h in hosts {
                    if rng.random_bool(0.7) {
                        let vms = (0..rng.random_range(0..6))
                            .map(|_| random_vm(&mut rng))
                            .filter(|v| v.host.as_str() == h)
                            .collect();
                        replies.push(reply(h, vms));
                    }
                }
                s.apply_list(since, &replies).unwrap();
            } else {
                if pending_gather.is_none() && rng.random_bool(0.05) {
                    pending_gather = Some(s.generation());
                }
                let batch: Vec<(EventKind, u64, VmInfo)> = (0..rng.random_range(1..4))
                    .map(|_| {
                        let kind = kinds[rng.random_range(0..kinds.len())];
                        (kind, step, random_vm(&mut rng))
                    })
                    .collect();
                s.apply_events(batch.iter().map(|(k, q, v)| (*k, *q, v)))
                    .unwrap();
            }
            let reg = s.lock();
            let whole = Zone::build(&s.settings, 0, reg.entries()).unwrap();
            assert_eq!(s.snapshot().shape(), whole.shape(), "after step {step}");
        }
        assert!(
            s.snapshot().record_count() > 0,
            "the run ends with something served"
        );
    }
}
