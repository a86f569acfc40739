//! The application's data: the [`Store`] trait every user layer is written against, and
//! [`Kv`], the replicated key-value map shipped with replicore.
//!
//! A store is a value with a delta algebra. The protocol never looks inside data; it only
//! asks a store to turn a client operation into a delta, to check whether a delta can be
//! applied, to apply it, and to compose two deltas. Whole-state transfer (a snapshot) is
//! the store value itself.
//!
//! # Laws
//! Every implementation must satisfy, for all states `s`, `old`, `new` and operations `o`:
//! - `s.apply(&s.delta_of(&o))` performs `o`;
//! - applying `compose(d1, d2)` equals applying `d1` then `d2`;
//! - applying `S::empty_delta()` changes nothing;
//! - applying `new.diff_from(&old)` to `old` gives `new`;
//! - states, deltas and operations decode to what was encoded (the runtime sends and saves
//!   them with postcard), and no method panics.
//!
//! The `laws` feature's `laws::check_store_laws` checks them on any store, from
//! sequences of operations a proptest strategy draws; `store::tests` runs it on [`Kv`].

use imbl::OrdMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::hash::Hash;

/// A number naming one committed state of the master's original copy (claims 9, 37, 43).
///
/// Version 0 is the empty initial state. Numbers strictly increase and a number used by an
/// update that ends aborted or rolled back is never used again.
pub type Version = u64;

/// A value trait bundle for everything that travels in a message or a saved state.
pub trait Payload:
    Clone + Debug + Eq + Hash + Ord + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T> Payload for T where
    T: Clone + Debug + Eq + Hash + Ord + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// The application's copy of the data, as the user layers of both servers see it.
///
/// Clones must be cheap (structurally shared), because the protocol saves the current data
/// with every durable step and hands snapshots to lagging slaves.
pub trait Store: Payload + Default {
    /// A client's request to change the data (an update, claim 2).
    type Op: Payload;
    /// A change between two states (claim 3).
    type Delta: Payload;

    /// The delta that performs `op` on this state.
    fn delta_of(&self, op: &Self::Op) -> Self::Delta;

    /// Whether this state can take `delta` (the slave user layer's answer to a prepare,
    /// claims 29, 47b).
    fn can_apply(&self, delta: &Self::Delta) -> bool {
        let _ = delta;
        true
    }

    /// Applies `delta` to this state, in place.
    fn apply(&mut self, delta: &Self::Delta);

    /// The single delta equal to `first` followed by `then` (claims 8, 16).
    fn compose(first: &Self::Delta, then: &Self::Delta) -> Self::Delta;

    /// The delta that changes nothing.
    fn empty_delta() -> Self::Delta;

    /// The delta that turns `old` into `self`. Used by the runtime to persist a step
    /// incrementally; with structurally shared stores it costs what changed, not the data set.
    fn diff_from(&self, old: &Self) -> Self::Delta;
}

/// An operation on a [`Kv`] store.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum KvOp<K, V> {
    /// Set `key` to `value`.
    Put(K, V),
    /// Remove `key`.
    Delete(K),
}

/// A change to a [`Kv`] store: for each touched key, its new value, or `None` for removed.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord + Clone, V: Serialize + Clone",
    deserialize = "K: Deserialize<'de> + Ord + Clone, V: Deserialize<'de> + Clone"
))]
pub struct KvDelta<K: Ord + Clone, V: Clone> {
    /// Key → new value (`None`: removed).
    #[serde(deserialize_with = "ordmap_cautiously")]
    pub changes: OrdMap<K, Option<V>>,
}

/// Deserializes an [`OrdMap`] through a `BTreeMap`, in the same format. imbl's own visitor
/// preallocates as many entries as the input claims, so a frame of a few bytes claiming a
/// huge map made the receiver allocate gigabytes and abort (found by fuzzing frame
/// decoding); serde's `BTreeMap` allocates as entries actually arrive.
pub(crate) fn ordmap_cautiously<'de, D, K, V>(deserializer: D) -> Result<OrdMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    let map = std::collections::BTreeMap::<K, V>::deserialize(deserializer)?;
    Ok(map.into_iter().collect())
}

/// The replicated key-value map: an ordered, structurally shared map, so that a clone is
/// O(1) and an update O(log n).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord + Clone, V: Serialize + Clone",
    deserialize = "K: Deserialize<'de> + Ord + Clone, V: Deserialize<'de> + Clone"
))]
pub struct Kv<K: Ord + Clone, V: Clone> {
    /// The entries.
    #[serde(deserialize_with = "ordmap_cautiously")]
    pub entries: OrdMap<K, V>,
}

impl<K: Ord + Clone, V: Clone> Default for KvDelta<K, V> {
    fn default() -> Self {
        KvDelta {
            changes: OrdMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Default for Kv<K, V> {
    fn default() -> Self {
        Kv {
            entries: OrdMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Kv<K, V> {
    /// The value at `key` (a read, claim 24).
    pub fn read(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K, V> Store for Kv<K, V>
where
    K: Payload,
    V: Payload,
{
    type Op = KvOp<K, V>;
    type Delta = KvDelta<K, V>;

    fn delta_of(&self, op: &Self::Op) -> Self::Delta {
        let mut changes = OrdMap::new();
        match op {
            KvOp::Put(k, v) => changes.insert(k.clone(), Some(v.clone())),
            KvOp::Delete(k) => changes.insert(k.clone(), None),
        };
        KvDelta { changes }
    }

    fn apply(&mut self, delta: &Self::Delta) {
        for (k, v) in &delta.changes {
            match v {
                Some(v) => self.entries.insert(k.clone(), v.clone()),
                None => self.entries.remove(k),
            };
        }
    }

    fn compose(first: &Self::Delta, then: &Self::Delta) -> Self::Delta {
        KvDelta {
            changes: then.changes.clone().union(first.changes.clone()),
        }
    }

    fn empty_delta() -> Self::Delta {
        KvDelta {
            changes: OrdMap::new(),
        }
    }

    fn diff_from(&self, old: &Self) -> Self::Delta {
        use imbl::ordmap::DiffItem;
        let mut changes = OrdMap::new();
        for item in old.entries.diff(&self.entries) {
            match item {
                DiffItem::Add(k, v) => changes.insert(k.clone(), Some(v.clone())),
                DiffItem::Update { new: (k, v), .. } => changes.insert(k.clone(), Some(v.clone())),
                DiffItem::Remove(k, _) => changes.insert(k.clone(), None),
            };
        }
        KvDelta { changes }
    }
}

/// The model's user-layer store: a tiny map with bounded keys and values.
pub type ModelKv = Kv<u8, u8>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::laws::check_store_laws_against;
    use proptest::prelude::*;

    /// Kv keeps every law, against a reference written on its entries directly.
    #[test]
    fn kv_keeps_the_store_laws() {
        let ops = prop_oneof![
            (0u8..4, 0u8..4).prop_map(|(k, v)| KvOp::Put(k, v)),
            (0u8..4).prop_map(KvOp::Delete),
        ];
        let performs = |s: &ModelKv, op: &KvOp<u8, u8>| {
            let mut s = s.clone();
            match *op {
                KvOp::Put(k, v) => s.entries.insert(k, v),
                KvOp::Delete(k) => s.entries.remove(&k),
            };
            s
        };
        if let Err(e) = check_store_laws_against(ops, 1024, performs) {
            panic!("{e}");
        }
    }

    /// The runtime's own store, with string keys and byte values.
    #[test]
    fn kv_of_strings_and_bytes_keeps_the_store_laws() {
        let ops = prop_oneof![
            ("[a-c]{0,2}", prop::collection::vec(any::<u8>(), 0..3))
                .prop_map(|(k, v)| KvOp::Put(k, v)),
            "[a-c]{0,2}".prop_map(KvOp::Delete),
        ];
        if let Err(e) = crate::laws::check_store_laws::<Kv<String, Vec<u8>>>(ops, 512) {
            panic!("{e}");
        }
    }
}
