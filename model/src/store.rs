//! The application's data: the [`Store`] trait every user layer is written against, and
//! [`Kv`], the replicated key-value map shipped with replicore.
//!
//! A store is a value with a delta algebra. The protocol never looks inside data; it only
//! asks a store to turn a client operation into a delta, to check whether a delta can be
//! applied, to apply it, and to compose two deltas. Whole-state transfer (a snapshot) is
//! the store value itself.
//!
//! # Laws
//! Every implementation must satisfy, for all states `s` and operations `o`, `p`:
//! - `s.apply(&s.delta_of(&o))` performs `o`;
//! - applying `compose(d1, d2)` equals applying `d1` then `d2`;
//! - applying `S::empty_delta()` changes nothing.
//!
//! `store::tests` checks these laws for [`Kv`] with proptest.

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
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = KvOp<u8, u8>> {
        prop_oneof![
            (0u8..4, 0u8..4).prop_map(|(k, v)| KvOp::Put(k, v)),
            (0u8..4).prop_map(KvOp::Delete),
        ]
    }

    /// Replays `ops` from the empty state, returning every intermediate state and the delta
    /// of each step.
    fn replay(ops: &[KvOp<u8, u8>]) -> (Vec<ModelKv>, Vec<KvDelta<u8, u8>>) {
        let mut states = vec![ModelKv::default()];
        let mut deltas = Vec::new();
        for op in ops {
            let mut s = states.last().unwrap().clone();
            let d = s.delta_of(op);
            s.apply(&d);
            states.push(s);
            deltas.push(d);
        }
        (states, deltas)
    }

    proptest! {
        /// Applying delta(a→b) to a gives b, for arbitrary remembered a.
        #[test]
        fn delta_between_arbitrary_states_yields_the_later(ops in prop::collection::vec(op(), 0..12), a in 0usize..12) {
            let (states, deltas) = replay(&ops);
            let a = a % states.len();
            let direct = deltas[a..].iter().fold(ModelKv::empty_delta(), |acc, d| ModelKv::compose(&acc, d));
            let mut s = states[a].clone();
            s.apply(&direct);
            prop_assert_eq!(&s, states.last().unwrap());
        }

        /// Chained deltas equal the direct delta: applying d1 then d2 equals compose(d1, d2).
        #[test]
        fn chained_deltas_equal_composed(ops in prop::collection::vec(op(), 0..12), split in 0usize..12) {
            let (states, deltas) = replay(&ops);
            let split = split % (deltas.len() + 1);
            let fold = |ds: &[KvDelta<u8, u8>]| ds.iter().fold(ModelKv::empty_delta(), |acc, d| ModelKv::compose(&acc, d));
            let (d1, d2) = (fold(&deltas[..split]), fold(&deltas[split..]));
            let mut chained = states[0].clone();
            chained.apply(&d1);
            chained.apply(&d2);
            let mut direct = states[0].clone();
            direct.apply(&ModelKv::compose(&d1, &d2));
            prop_assert_eq!(&chained, &direct);
            prop_assert_eq!(&direct, states.last().unwrap());
        }

        /// A snapshot (the store value) equals replaying every delta from version 0.
        #[test]
        fn snapshot_equals_replaying_all_deltas(ops in prop::collection::vec(op(), 0..12)) {
            let (states, deltas) = replay(&ops);
            let mut replayed = ModelKv::default();
            for d in &deltas {
                replayed.apply(d);
            }
            prop_assert_eq!(&replayed, states.last().unwrap());
            let bytes = postcard::to_allocvec(states.last().unwrap()).unwrap();
            let decoded: ModelKv = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&decoded, states.last().unwrap());
        }

        /// `diff_from` is the delta between two states.
        #[test]
        fn diff_from_turns_old_into_new(ops in prop::collection::vec(op(), 0..12), a in 0usize..12) {
            let (states, _) = replay(&ops);
            let a = a % states.len();
            let newest = states.last().unwrap();
            let mut s = states[a].clone();
            s.apply(&newest.diff_from(&states[a]));
            prop_assert_eq!(&s, newest);
        }
    }
}
