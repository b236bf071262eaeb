//! A map that remembers which keys were written since the last time it was asked.
//!
//! The node keeps its friends, payments, invoices and outcomes in these, so that a durable
//! store can write exactly what one step changed (never the whole state). Every write goes
//! through `get_mut`, `insert` or `remove`, and each records its key; reads do not.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A `BTreeMap` that records the keys written to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tracked<K: Ord, V> {
    map: BTreeMap<K, V>,
    #[serde(skip)]
    changed: BTreeSet<K>,
}

impl<K: Ord, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy, V> Tracked<K, V> {
    /// A map holding `map`, with nothing marked as changed.
    pub fn from_map(map: BTreeMap<K, V>) -> Self {
        Tracked {
            map,
            changed: BTreeSet::new(),
        }
    }

    /// Read a value.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Write access to a value; marks the key as changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let v = self.map.get_mut(key)?;
        self.changed.insert(*key);
        Some(v)
    }

    /// Insert; marks the key as changed.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.changed.insert(key);
        self.map.insert(key, value)
    }

    /// Remove; marks the key as changed (a store deletes it).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let v = self.map.remove(key)?;
        self.changed.insert(*key);
        Some(v)
    }

    /// Whether the key is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    /// The values, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Mark every key as changed (so the next `take_changed` reports the whole map).
    pub fn mark_all(&mut self) {
        self.changed = self.map.keys().copied().collect();
    }

    /// The keys written since the last call, with their current value (`None`: removed).
    pub fn take_changed(&mut self) -> Vec<(K, Option<&V>)> {
        let changed = std::mem::take(&mut self.changed);
        changed.into_iter().map(|k| (k, self.map.get(&k))).collect()
    }

    /// [`Tracked::take_changed`], with write access to each value for the caller's own
    /// bookkeeping kept in it (what a store last saw): not a change, so nothing is marked.
    pub fn take_changed_mut(&mut self, mut f: impl FnMut(K, Option<&mut V>)) {
        for k in std::mem::take(&mut self.changed) {
            f(k, self.map.get_mut(&k));
        }
    }
}
