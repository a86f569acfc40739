//! The messages of protocol 4 (seed 003): the synchronization message of claims 1, 2 and 7,
//! the stability report, and the requests of a local user.

use super::document::Edit;
use crate::store::Payload;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;

/// A peer's id: its index among the peers, also its network identity (claims 5, 8).
pub type PeerId = u64;

/// An operation's id: the peer that originated it and that peer's counter, from 1. The
/// originating peer is part of the id, so every message that names an operation names its
/// origin (claims 2, 7, 8).
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
pub struct OpId {
    /// The originating peer.
    pub origin: PeerId,
    /// The origin's counter.
    pub seq: u32,
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}.{}", self.origin, self.seq)
    }
}

/// The priority a synchronization message carries (claims 1, 5, 7: "a parameter identifying
/// a unique priority level").
///
/// As the seed writes it, the priority is the sending peer's alone (`age` is 0): a fixed
/// rank per peer. Shipped, an operation also carries its age, the stage its origin first
/// executed it at, and an older operation wins over a younger one whatever their peers; the
/// peer breaks ties (see [`super::Ordering`]). [`Sync::beats`] is the one comparison.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
pub struct Priority {
    /// The stage the origin first executed the operation at; 0 under fixed priorities.
    pub age: u32,
    /// The originating peer: a higher id is a higher priority (claim 5: the priority is the
    /// peer's network identity).
    pub peer: PeerId,
}

impl Priority {
    /// The rank of the operation `id` with this priority: larger wins. Older first (a smaller
    /// age), then the higher peer, then the origin's earlier operation, so that any two
    /// operations compare, and compare the same on every peer.
    pub fn rank(self, id: OpId) -> (Reverse<u32>, PeerId, Reverse<u32>) {
        (Reverse(self.age), self.peer, Reverse(id.seq))
    }
}

/// The current operation parameter (claims 1, 7): the operation, the data to execute it
/// again, and the stage its sender executed it at.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Current<V: Payload> {
    /// The operation (and its originating peer).
    pub id: OpId,
    /// Which execution of the operation this is at its origin: 1 when first executed, one
    /// more each time the origin undid it and executed it again (claim 14). An addition to
    /// the seed: without it a receiver cannot tell an operation's new stage from a stale
    /// message of an old one, and a late stale message would move it back.
    pub attempt: u32,
    /// The data to execute it.
    pub edit: Edit<V>,
    /// The execution stage: its position (from 1) in the sender's journal.
    pub stage: u32,
}

/// The previous operation parameter (claims 1, 2, 7, 8): the operation the sender had
/// executed just before, at the stage before; its originating peer is in its id.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Previous {
    /// The operation.
    pub id: OpId,
    /// Its stage: the current operation's stage minus one.
    pub stage: u32,
}

/// The synchronization message (claims 1, 2, 7, 17): sent by an operation's origin to every
/// other peer each time it executes it.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Sync<V: Payload> {
    /// The current operation.
    pub current: Current<V>,
    /// The previous operation; `None` at stage 1.
    pub previous: Option<Previous>,
    /// The priority.
    pub priority: Priority,
}

impl<V: Payload> Sync<V> {
    /// Whether this message's operation wins a stage over `other`'s.
    pub fn beats(&self, other: &Sync<V>) -> bool {
        self.priority.rank(self.current.id) > other.priority.rank(other.current.id)
    }

    /// Whether the message is well formed: the previous operation sits one stage before, and
    /// a stage above 1 has one. A malformed message is ignored.
    pub fn well_formed(&self) -> bool {
        let c = &self.current;
        c.stage >= 1
            && c.attempt >= 1
            && c.id.seq >= 1
            && match &self.previous {
                None => c.stage == 1,
                Some(p) => p.stage + 1 == c.stage && p.id != c.id,
            }
    }
}

/// What a peer reports of its journal, for the stability line: sent to every other peer when
/// its journal changed and it holds nothing back (empty waiting list and redo queue). Not in
/// the seed; see `docs/stage-sync.md`.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Report {
    /// The sender's report counter: a receiver keeps the highest.
    pub seq: u32,
    /// The stage the sender's journal was truncated at.
    pub base: u32,
    /// The chain value at `base` (see [`chain`]).
    pub base_chain: u64,
    /// The operations of the sender's journal above `base`, in stage order.
    pub ops: Vec<OpId>,
}

impl Report {
    /// The chain value at every stage from `base` up.
    pub fn chains(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.ops.len() + 1);
        let mut c = self.base_chain;
        out.push(c);
        for id in &self.ops {
            c = chain(c, *id);
            out.push(c);
        }
        out
    }
}

/// The messages of protocol 4.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum StageMsg<V: Payload> {
    /// Peer to peer: an operation executed (claims 1, 7).
    Sync(Sync<V>),
    /// Peer to peer: the sender's journal, for the stability line.
    Report(Report),
    /// A local user to its peer (claim 1, "in response to a received user input"): execute
    /// this edit. Answered with [`StageMsg::Edited`].
    Edit(Edit<V>),
    /// The peer's answer to [`StageMsg::Edit`]: the new operation and its stage.
    Edited {
        /// The operation.
        id: OpId,
        /// Its stage.
        stage: u32,
    },
    /// A local user asks for the document. Answered with [`StageMsg::Document`].
    Show,
    /// The peer's answer to [`StageMsg::Show`].
    Document {
        /// The peer's current stage (its journal's length, truncated part included).
        stage: u32,
        /// Its stability line.
        stable: u32,
        /// Messages held in its waiting list and redo queue.
        held: u32,
        /// The values.
        items: Vec<V>,
    },
}

/// The timers of a peer. The model fires any set timer at any moment; the runtime maps each to
/// a duration.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Timer {
    /// The model's user makes the peer's next scripted edit.
    Edit,
    /// Send again the last message of each own operation not yet stable, and the last
    /// report: repairs messages lost, or sent while a peer was unreachable.
    Resend,
}

/// The chain value after `id` follows a prefix whose chain value is `prev`: 64-bit FNV-1a
/// over the previous value and the id. Equal chain values at a stage mean (barring a hash
/// collision) equal journals up to that stage. Fixed here, not a library hash, because chain
/// values are saved and compared across processes and versions.
pub fn chain(prev: u64, id: OpId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = prev
        .to_le_bytes()
        .into_iter()
        .chain(id.origin.to_le_bytes())
        .chain(id.seq.to_le_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The chain value of the empty journal.
pub const CHAIN_START: u64 = 0;
