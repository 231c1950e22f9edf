//! The UDP fast path's name index: a name's lowercase wire form → its encoded answers.
//!
//! Layout decision: a fixed number of shards, each a flat hash map (`std`'s, open addressing)
//! behind an `Arc`, the shard chosen by bits of the name's hash that the map itself does not
//! use. A lookup is the shard pointer (the shard table is 8 KiB and stays in cache), the map's
//! control bytes and its slot (key inline, [`WireKey`]) and the answer bytes: about three cache
//! misses. The persistent trie it replaces (`rpds`, as the zone's other index still is) took
//! about seven at 10,000 VMs, two per level (node, then its child array) and one for the entry,
//! and that lookup was a fifth of a reader thread's time at 10,000 VMs against a tenth at 1,000.
//! A new snapshot copies the shard table (1,024 pointers) and clones only the shards its
//! changes touch, each ~1/1,024 of the names; everything else is shared with the previous one.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use crate::wire::{EncodedAnswers, WireKey};

/// How many shards.
const SHARDS: usize = 1024;

/// The hasher: foldhash, seeded per process. Only the zone's own names are inserted, a
/// query's name is only looked up, so no input from the network can grow a bucket.
type Hasher = foldhash::fast::RandomState;

/// One shard.
type Shard = HashMap<WireKey, EncodedAnswers, Hasher>;

/// A snapshot's name index; cloning it shares every shard.
#[derive(Clone)]
pub struct WireIndex {
    hasher: Hasher,
    shards: Arc<[Arc<Shard>]>,
}

impl std::fmt::Debug for WireIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireIndex")
            .field("names", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for WireIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// A change to one name: its new answers, or `None` to remove it.
pub type WireChange = (WireKey, Option<EncodedAnswers>);

impl WireIndex {
    /// An empty index.
    pub fn new() -> Self {
        let hasher = Hasher::default();
        let empty = Arc::new(Shard::with_hasher(hasher.clone()));
        Self {
            hasher,
            shards: (0..SHARDS).map(|_| Arc::clone(&empty)).collect(),
        }
    }

    /// The shard of `key`: bits 32 and up of its hash. The map inside uses the low bits (the
    /// bucket) and the top seven (the control tag), which must keep varying within a shard.
    fn shard_of(&self, key: &[u8]) -> usize {
        let bits = (self.hasher.hash_one(key) >> 32) & 0xFFFF;
        usize::try_from(bits).unwrap_or(0) % SHARDS
    }

    /// The answers of `key` (lowercase wire form).
    pub fn get(&self, key: &[u8]) -> Option<&EncodedAnswers> {
        self.shards.get(self.shard_of(key))?.get(key)
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether it holds no name.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// The next index: this one with `changes` applied in order. Clones the shards they touch
    /// (each once) and shares the others.
    pub fn with_changes(&self, changes: impl IntoIterator<Item = WireChange>) -> Self {
        let mut shards: Vec<Arc<Shard>> = self.shards.to_vec();
        for (key, answers) in changes {
            let Some(shard) = shards.get_mut(self.shard_of(key.as_bytes())) else {
                continue;
            };
            let map = Arc::make_mut(shard);
            match answers {
                Some(a) => {
                    map.insert(key, a);
                }
                None => {
                    map.remove(key.as_bytes());
                }
            }
        }
        Self {
            hasher: self.hasher.clone(),
            shards: shards.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::wire::wire_key;

    fn answers(ip: &str) -> EncodedAnswers {
        let addr: IpAddr = ip.parse().unwrap();
        EncodedAnswers::new(5, [&addr])
    }

    #[test]
    fn changes_apply_in_order_and_untouched_shards_are_shared() {
        let names: Vec<String> = (0..5_000).map(|i| format!("vm-{i}.vm.")).collect();
        let full = WireIndex::new().with_changes(
            names
                .iter()
                .map(|n| (wire_key(n), Some(answers("10.0.0.1")))),
        );
        assert_eq!(full.len(), 5_000);
        for n in &names {
            assert_eq!(
                full.get(wire_key(n).as_bytes()),
                Some(&answers("10.0.0.1")),
                "{n}"
            );
        }
        assert!(full.get(wire_key("nope.vm.").as_bytes()).is_none());

        // Replace one name, remove another, add and remove a third: one batch.
        let next = full.with_changes([
            (wire_key("vm-1.vm."), Some(answers("10.0.0.9"))),
            (wire_key("vm-2.vm."), None),
            (wire_key("new.vm."), Some(answers("10.0.0.3"))),
            (wire_key("new.vm."), None),
        ]);
        assert_eq!(next.len(), 4_999);
        assert_eq!(
            next.get(wire_key("vm-1.vm.").as_bytes()),
            Some(&answers("10.0.0.9"))
        );
        assert!(next.get(wire_key("vm-2.vm.").as_bytes()).is_none());
        assert!(next.get(wire_key("new.vm.").as_bytes()).is_none());
        // The previous snapshot is unchanged.
        assert_eq!(
            full.get(wire_key("vm-1.vm.").as_bytes()),
            Some(&answers("10.0.0.1"))
        );
        assert!(full.get(wire_key("vm-2.vm.").as_bytes()).is_some());

        let touched: std::collections::HashSet<usize> = ["vm-1.vm.", "vm-2.vm.", "new.vm."]
            .iter()
            .map(|n| full.shard_of(wire_key(n).as_bytes()))
            .collect();
        for (i, (a, b)) in full.shards.iter().zip(next.shards.iter()).enumerate() {
            assert_eq!(Arc::ptr_eq(a, b), !touched.contains(&i), "shard {i}");
        }
        // The names spread over the shards.
        assert!(full.shards.iter().filter(|s| !s.is_empty()).count() > SHARDS * 9 / 10);
    }
}
