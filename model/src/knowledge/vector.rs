//! Knowledge: which changes a replica knows, as a version vector with exceptions (seed 004,
//! claims 1, 9, 29: "a knowledge ... includes one or more change IDs that represent changes
//! that the first replica is aware of").
//!
//! A change is named by a [`ChangeId`]: the replica that made it and that replica's counter.
//! Per replica, knowledge holds a prefix `1..=upto` and a set of further counters above it
//! (the exceptions), so a replica can know changes 1–5 and 8 of another replica. The form is
//! canonical (no exception equals `upto + 1`, no empty entry), so two knowledges that name the
//! same set of changes are equal values and hash alike, as the model checker needs.
//!
//! A [`Filter`] restricts a sync to some items (claims 19, 38); a [`FilteredKnowledge`] is
//! knowledge that holds only for the items a filter matches (claims 20, 39), made by
//! [`Knowledge::project`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A replica's name in the sync community. As the maker of changes ([`ChangeId::replica`]) it
/// also names the incarnation of the replica's store ([`maker`]).
pub type ReplicaId = u64;

/// The name a replica makes its changes under (claim 29: "the replica that assigned it"): its
/// replica id in the low 32 bits, the incarnation of its store in the high 32 bits. A store
/// created again after it was lost (`--init` on an empty directory) is a new incarnation, so
/// the replica's changes and sessions never reuse the names of those it made before and
/// forgot (issue 18). The model's first incarnation is 0, so its names are the plain ids.
pub fn maker(replica: ReplicaId, incarnation: u32) -> ReplicaId {
    (replica & u64::from(u32::MAX)) | (u64::from(incarnation) << 32)
}

/// The replica id part of a maker ([`maker`]).
pub fn replica_of(maker: ReplicaId) -> ReplicaId {
    maker & u64::from(u32::MAX)
}

/// The incarnation part of a maker ([`maker`]).
pub fn incarnation_of(maker: ReplicaId) -> u32 {
    (maker >> 32) as u32
}

/// A maker as reports write it: `r2` for incarnation 0, `r2.1f` (the incarnation in hex)
/// otherwise.
pub fn maker_name(maker: ReplicaId) -> String {
    match incarnation_of(maker) {
        0 => format!("r{}", replica_of(maker)),
        i => format!("r{}.{i:x}", replica_of(maker)),
    }
}

/// The name of one change (claims 1, 29): the replica that made it and that replica's
/// counter at the time. Counters start at 1 and only grow, across crash-restart too.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct ChangeId {
    /// The replica that assigned the id (claim 29).
    pub replica: ReplicaId,
    /// Its counter; 1 is the first change.
    pub counter: u64,
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", maker_name(self.replica), self.counter)
    }
}

/// What a replica knows of one other replica's changes: `1..=upto` and every counter in
/// `extra`.
///
/// # Invariants
/// Every counter in `extra` is above `upto + 1` (so the form is canonical).
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Known {
    /// Every counter from 1 to this one is known (0: none).
    pub upto: u64,
    /// Counters known above `upto + 1` (the exceptions to the prefix).
    pub extra: BTreeSet<u64>,
}

impl Known {
    fn contains(&self, counter: u64) -> bool {
        (counter >= 1 && counter <= self.upto) || self.extra.contains(&counter)
    }

    fn normalize(&mut self) {
        let upto = self.upto;
        self.extra.retain(|c| *c > upto);
        while let Some(next) = self.upto.checked_add(1)
            && self.extra.remove(&next)
        {
            self.upto = next;
        }
    }

    fn is_empty(&self) -> bool {
        self.upto == 0 && self.extra.is_empty()
    }
}

/// A set of change ids, as a version vector with exceptions.
///
/// # Invariants
/// No entry is empty and every entry is canonical ([`Known`]).
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Knowledge {
    /// Per replica, the counters known.
    pub replicas: BTreeMap<ReplicaId, Known>,
}

impl Knowledge {
    /// Knows nothing.
    pub fn new() -> Self {
        Knowledge::default()
    }

    /// Whether it knows no change.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Whether it knows change `id`.
    pub fn contains(&self, id: ChangeId) -> bool {
        self.replicas
            .get(&id.replica)
            .is_some_and(|k| k.contains(id.counter))
    }

    /// Adds change `id`. Counter 0 names no change and is ignored.
    pub fn insert(&mut self, id: ChangeId) {
        if id.counter == 0 || self.contains(id) {
            return;
        }
        let k = self.replicas.entry(id.replica).or_default();
        k.extra.insert(id.counter);
        k.normalize();
    }

    /// Adds every change `other` knows.
    pub fn union(&mut self, other: &Knowledge) {
        for (r, o) in &other.replicas {
            let k = self.replicas.entry(*r).or_default();
            k.upto = k.upto.max(o.upto);
            k.extra.extend(o.extra.iter().copied());
            k.normalize();
            if k.is_empty() {
                self.replicas.remove(r);
            }
        }
    }

    /// Whether every change `other` knows is known here.
    ///
    /// Its cost is linear in the exceptions, never in the counters: knowledge arrives from
    /// peers and files, and a prefix up to `u64::MAX` must not take forever.
    pub fn includes(&self, other: &Knowledge) -> bool {
        let empty = Known::default();
        other.replicas.iter().all(|(r, o)| {
            let k = self.replicas.get(r).unwrap_or(&empty);
            // Every counter of o's prefix above k's prefix must be one of k's exceptions:
            // the exceptions are distinct, so counting those in the range decides it.
            let prefix = o.upto <= k.upto
                || k.extra.range(k.upto + 1..=o.upto).count() as u64 == o.upto - k.upto;
            prefix && o.extra.iter().all(|c| k.contains(*c))
        })
    }

    /// The highest counter of `replica` known here (0: none).
    pub fn max_counter(&self, replica: ReplicaId) -> u64 {
        self.replicas
            .get(&replica)
            .map_or(0, |k| k.extra.last().copied().unwrap_or(0).max(k.upto))
    }

    /// Every change id known, in order. The model's counters are small; the runtime uses it
    /// only for display.
    pub fn ids(&self) -> impl Iterator<Item = ChangeId> + '_ {
        self.replicas.iter().flat_map(|(r, k)| {
            (1..=k.upto)
                .chain(k.extra.iter().copied())
                .map(move |counter| ChangeId {
                    replica: *r,
                    counter,
                })
        })
    }

    /// This knowledge, restricted to the items `filter` matches (claims 20, 39): a replica
    /// that knows every change in `self` knows in particular every change to those items.
    pub fn project<K: Ord + Clone>(&self, filter: &Filter<K>) -> FilteredKnowledge<K> {
        FilteredKnowledge {
            filter: filter.clone(),
            knowledge: self.clone(),
        }
    }
}

impl fmt::Display for Knowledge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .replicas
            .iter()
            .map(|(r, k)| {
                let mut s = format!("{}:", maker_name(*r));
                match k.upto {
                    0 => {}
                    1 => s.push('1'),
                    n => s.push_str(&format!("1-{n}")),
                }
                for (i, c) in k.extra.iter().enumerate() {
                    if k.upto > 0 || i > 0 {
                        s.push(',');
                    }
                    s.push_str(&c.to_string());
                }
                s
            })
            .collect();
        write!(f, "{{{}}}", parts.join(" "))
    }
}

/// Which items a sync covers (claims 19, 38): the items whose key is in `keys`.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord",
    deserialize = "K: Deserialize<'de> + Ord"
))]
pub struct Filter<K: Ord> {
    /// The keys of the items the filter lets through.
    pub keys: BTreeSet<K>,
}

impl<K: Ord> Filter<K> {
    /// A filter that lets `keys` through.
    pub fn new(keys: impl IntoIterator<Item = K>) -> Self {
        Filter {
            keys: keys.into_iter().collect(),
        }
    }

    /// Whether the item at `key` passes.
    pub fn matches(&self, key: &K) -> bool {
        self.keys.contains(key)
    }
}

/// Knowledge that holds for the items `filter` matches only (claims 20, 39).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord",
    deserialize = "K: Deserialize<'de> + Ord"
))]
pub struct FilteredKnowledge<K: Ord> {
    /// The items it is about.
    pub filter: Filter<K>,
    /// The changes known for those items.
    pub knowledge: Knowledge,
}

impl<K: Ord> FilteredKnowledge<K> {
    /// Whether change `id` to the item at `key` is known.
    pub fn contains(&self, id: ChangeId, key: &K) -> bool {
        self.filter.matches(key) && self.knowledge.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = ChangeId> {
        (0u64..3, 1u64..8).prop_map(|(replica, counter)| ChangeId { replica, counter })
    }

    fn knowledge() -> impl Strategy<Value = Knowledge> {
        prop::collection::vec(id(), 0..10).prop_map(|ids| {
            let mut k = Knowledge::new();
            for i in ids {
                k.insert(i);
            }
            k
        })
    }

    fn all_ids() -> Vec<ChangeId> {
        (0..3)
            .flat_map(|replica| (1..8).map(move |counter| ChangeId { replica, counter }))
            .collect()
    }

    #[test]
    fn knows_a_prefix_and_exceptions() {
        let mut k = Knowledge::new();
        for c in [1, 2, 3, 4, 5, 8] {
            k.insert(ChangeId {
                replica: 1,
                counter: c,
            });
        }
        let id = |counter| ChangeId {
            replica: 1,
            counter,
        };
        assert_eq!(k.replicas[&1].upto, 5);
        assert_eq!(k.replicas[&1].extra, BTreeSet::from([8]));
        assert!(k.contains(id(5)) && k.contains(id(8)));
        assert!(!k.contains(id(6)) && !k.contains(id(0)));
        assert_eq!(k.to_string(), "{r1:1-5,8}");
        k.insert(id(6));
        k.insert(id(7));
        assert_eq!(k.replicas[&1].upto, 8);
        assert!(k.replicas[&1].extra.is_empty());
        assert_eq!(k.max_counter(1), 8);
    }

    #[test]
    fn inclusion_of_a_huge_prefix_is_decided_at_once() {
        let mut huge = Knowledge::new();
        huge.replicas.insert(
            0,
            Known {
                upto: u64::MAX,
                extra: BTreeSet::new(),
            },
        );
        let mut small = Knowledge::new();
        small.insert(ChangeId {
            replica: 0,
            counter: 3,
        });
        assert!(!small.includes(&huge));
        assert!(huge.includes(&small));
        assert!(huge.includes(&huge));
        let mut both = small.clone();
        both.union(&huge);
        assert_eq!(both, huge);
    }

    #[test]
    fn a_filtered_knowledge_holds_only_inside_its_filter() {
        let mut k = Knowledge::new();
        let c = ChangeId {
            replica: 0,
            counter: 1,
        };
        k.insert(c);
        let f = k.project(&Filter::new([1u8]));
        assert!(f.contains(c, &1));
        assert!(!f.contains(c, &2));
    }

    proptest! {
        /// The form is canonical: two knowledges of the same set are equal values.
        #[test]
        fn equal_sets_are_equal_values(ids in prop::collection::vec(id(), 0..12), seed in any::<u64>()) {
            let mut a = Knowledge::new();
            for i in &ids { a.insert(*i); }
            let mut shuffled = ids.clone();
            // A deterministic permutation from the seed.
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n.max(1)); }
            let mut b = Knowledge::new();
            for i in &shuffled { b.insert(*i); }
            prop_assert_eq!(&a, &b);
            for i in all_ids() {
                prop_assert_eq!(a.contains(i), ids.contains(&i));
            }
        }

        /// Union is set union: commutative, associative, idempotent, and contains either side.
        #[test]
        fn union_is_set_union(a in knowledge(), b in knowledge(), c in knowledge()) {
            let mut ab = a.clone(); ab.union(&b);
            let mut ba = b.clone(); ba.union(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.union(&c);
            let mut bc = b.clone(); bc.union(&c);
            let mut a_bc = a.clone(); a_bc.union(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.union(&a);
            prop_assert_eq!(&aa, &a);
            for i in all_ids() {
                prop_assert_eq!(ab.contains(i), a.contains(i) || b.contains(i));
            }
            prop_assert!(ab.includes(&a) && ab.includes(&b));
        }

        /// `includes` is set inclusion.
        #[test]
        fn includes_is_set_inclusion(a in knowledge(), b in knowledge()) {
            let by_ids = all_ids().into_iter().all(|i| !b.contains(i) || a.contains(i));
            prop_assert_eq!(a.includes(&b), by_ids);
            prop_assert!(a.includes(&Knowledge::new()));
            prop_assert_eq!(a.includes(&b) && b.includes(&a), a == b);
        }

        /// `ids` lists exactly the known changes, and `max_counter` the highest per replica.
        #[test]
        fn ids_list_the_set(a in knowledge()) {
            let listed: BTreeSet<ChangeId> = a.ids().collect();
            let expected: BTreeSet<ChangeId> = all_ids().into_iter().filter(|i| a.contains(*i)).collect();
            prop_assert_eq!(&listed, &expected);
            for r in 0..3 {
                let max = expected.iter().filter(|i| i.replica == r).map(|i| i.counter).max().unwrap_or(0);
                prop_assert_eq!(a.max_counter(r), max);
            }
        }

        /// Projection keeps the knowledge for matching items and nothing for the others.
        #[test]
        fn projection_is_restriction(a in knowledge(), keys in prop::collection::btree_set(0u8..4, 0..4), key in 0u8..4) {
            let f = a.project(&Filter { keys: keys.clone() });
            for i in all_ids() {
                prop_assert_eq!(f.contains(i, &key), keys.contains(&key) && a.contains(i));
            }
        }

        /// Postcard round-trips.
        #[test]
        fn encodes_and_decodes(a in knowledge()) {
            let bytes = postcard::to_allocvec(&a).unwrap();
            let back: Knowledge = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back, a);
        }
    }
}
