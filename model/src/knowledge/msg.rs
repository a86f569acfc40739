//! The messages of protocol 3 (seed 004), one variant per message of the claims, and the
//! change they carry.
//!
//! A sync is pulled by its destination: it sends [`SyncMsg::RequestChanges`] with a fresh
//! session number; the source answers with one [`SyncMsg::ConveyChanges`] per change the
//! destination does not know and one [`SyncMsg::CompleteBundle`]. Every message of a sync
//! carries the destination's session number, so a stale or duplicated message of an earlier
//! sync is told apart and ignored.

use super::vector::{ChangeId, Filter, FilteredKnowledge, Knowledge, ReplicaId};
use crate::store::Payload;
use serde::{Deserialize, Serialize};

/// One change to one item (claims 1, 2, 29): the new value of the item at `key`, or a
/// tombstone (`value: None`) for a deletion.
///
/// The change is also the item's version: a replica stores, per key, the last change it
/// applied.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Change<K: Payload, V: Payload> {
    /// The change's id: the replica that made it and its counter (claims 1, 29).
    pub id: ChangeId,
    /// The item's key.
    pub key: K,
    /// The new value; `None` is a tombstone (a deletion).
    pub value: Option<V>,
    /// The made-with knowledge (claims 2, 10, 29): what the maker knew when it made the
    /// change, joined with the made-with knowledge of the versions of this item it replaced.
    /// A change `a` of the same item happened before this one exactly when `made_with`
    /// contains `a.id`; two changes of one item neither of which contains the other are
    /// concurrent, a conflict.
    pub made_with: Knowledge,
}

impl<K: Payload, V: Payload> Change<K, V> {
    /// Whether this change replaced `other` (knew it when it was made).
    pub fn supersedes(&self, other: &Change<K, V>) -> bool {
        self.made_with.contains(other.id)
    }

    /// Whether this change and `other` (of the same item) are concurrent: neither was made
    /// knowing the other.
    pub fn concurrent_with(&self, other: &Change<K, V>) -> bool {
        self.id != other.id && !self.supersedes(other) && !other.supersedes(self)
    }
}

/// How the destination resolved a conflict (its policy).
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
pub enum ConflictPolicy {
    /// The incoming value wins; the destination records it as a new change that supersedes
    /// both sides.
    SourceWins,
    /// The local value wins; the destination records it as a new change that supersedes
    /// both sides, so the source learns it on its next sync.
    #[default]
    DestinationWins,
    /// Both are kept: the local value stays, the incoming change is queued for the
    /// application, which resolves it by writing the item.
    KeepBoth,
}

impl ConflictPolicy {
    /// Every policy.
    pub const ALL: [ConflictPolicy; 3] = [
        ConflictPolicy::SourceWins,
        ConflictPolicy::DestinationWins,
        ConflictPolicy::KeepBoth,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::SourceWins => "source-wins",
            ConflictPolicy::DestinationWins => "destination-wins",
            ConflictPolicy::KeepBoth => "keep-both",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<ConflictPolicy> {
        ConflictPolicy::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// What happened at the destination when it received a change (claim 6).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum Applied<K: Payload, V: Payload> {
    /// The change is now the item's version; it superseded `replaced` (the previous version,
    /// if the destination had the item).
    Applied {
        /// The version it replaced.
        replaced: Option<ChangeId>,
    },
    /// The destination's version `by` already superseded it: nothing to apply.
    Obsolete {
        /// The destination's version.
        by: Change<K, V>,
    },
    /// The change and the destination's version `local` are concurrent: a conflict, resolved
    /// by the destination's policy.
    Conflict {
        /// The destination's version.
        local: Change<K, V>,
        /// The policy applied.
        resolution: ConflictPolicy,
    },
}

/// The messages of protocol 3 (seed 004).
///
/// Every variant is safe to receive stale, duplicated or out of order: a sync message for a
/// session the receiver has not open is ignored, a change already known changes nothing.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum SyncMsg<K: Payload, V: Payload> {
    /// Destination → source: send me the changes I do not know (claims 1, 9, 19, 22, 33, 38).
    RequestChanges {
        /// The destination's session number: unique per destination, across restarts.
        session: u64,
        /// The destination's knowledge (claim 1: "a knowledge argument").
        knowledge: Knowledge,
        /// The destination's filtered knowledge (claim 20), so the source does not resend
        /// what it knows for some items only.
        filtered: Vec<FilteredKnowledge<K>>,
        /// Only changes to items this filter matches (claims 19, 38).
        filter: Option<Filter<K>>,
        /// A full enumeration: send every item, whatever the destination knows. Asked for by
        /// a destination that lacks the source's minimum knowledge (claim 21).
        recovery: bool,
        /// Two-way sync (claim 22): the source then pulls from the destination too.
        two_way: bool,
    },
    /// Source → destination: one change the destination does not know (claims 1, 2, 10, 15,
    /// 21, 29).
    ConveyChanges {
        /// The destination's session number.
        session: u64,
        /// The source as a maker ([`super::vector::maker`]): its id and the incarnation of
        /// its store. A sync takes the bundle of one incarnation only: a source created
        /// again after its store was lost has forgotten what it answered, and may answer a
        /// duplicated request a second time with another bundle.
        source: ReplicaId,
        /// The change's position in the bundle, from 0; the bundle's count says how many.
        seq: u32,
        /// The change, its id and its made-with knowledge.
        change: Change<K, V>,
        /// The knowledge the destination must have for the change to be valid (claim 21):
        /// the source's forgotten knowledge. Without it the destination may have missed a
        /// deletion whose tombstone the source no longer keeps.
        minimum: Option<Knowledge>,
    },
    /// Source → destination: the bundle is complete (claims 3, 4, 11, 12, 16, 20, 23, 35).
    CompleteBundle {
        /// The destination's session number.
        session: u64,
        /// The source as a maker, as in `ConveyChanges`.
        source: ReplicaId,
        /// How many ConveyChanges the source sent for this session (claim 4).
        count: u32,
        /// What the destination learns once it has applied all `count` changes (claim 4):
        /// the source's knowledge (empty for a filtered sync).
        learned: Knowledge,
        /// What the destination learns for the filtered items only (claim 20).
        filtered_learned: Option<FilteredKnowledge<K>>,
        /// The source's forgotten knowledge: a destination that does not include it refuses
        /// the bundle (claim 21, also when the bundle has no change); after a full
        /// enumeration it adopts it.
        forgotten: Knowledge,
    },
    /// Any replica → peers: I have changes you may want (claims 5, 13, 36).
    AdvertiseChanges {
        /// The advertiser's knowledge.
        knowledge: Knowledge,
    },
    /// Destination → source: what happened to one change (claim 6). Optional in the seed;
    /// sent for every change here, and read by nobody but the checker.
    AcknowledgeChange {
        /// The destination's session number.
        session: u64,
        /// The change.
        id: ChangeId,
        /// What the destination did.
        outcome: Applied<K, V>,
    },
    /// Destination → source: send no more changes for this session (claims 7, 18).
    CancelChangeFlow {
        /// The destination's session number.
        session: u64,
    },
    /// Destination → source: my knowledge changed, because I merged the learned knowledge of
    /// bundle `session` (claims 8, 17).
    ConveyKnowledge {
        /// The destination's session number whose bundle it merged.
        session: u64,
        /// The destination's knowledge now.
        knowledge: Knowledge,
    },
}

/// The timers of a replica. The model fires any set timer at any moment; the runtime maps
/// each to a duration.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Timer {
    /// Make the next local edit of the replica's script (the model's application).
    Edit,
    /// Pull from the peer with this actor index (a new sync, unless one is open).
    Pull(usize),
    /// The application cancels the open sync.
    Cancel,
    /// Forget tombstones.
    Purge,
}
