//! Protocol 2's messages, timers and the values they carry.
//!
//! Every message between nodes carries the sender's approval epoch, so a receiver can fence
//! it: a node never acts on anything from an epoch lower than its own (the shipped
//! [`super::Variant::Fenced`]). The seed's scheme ([`super::Variant::Seed`]) has no epochs;
//! it sends epoch 0 throughout.

use crate::store::{KvDelta, KvOp, Payload, Version};
use serde::{Deserialize, Serialize};

/// An approval epoch: 0 while the master (computer 1) approves; the backup (computer 2)
/// approves in epoch 1 once it has taken over. Epochs only grow and are saved before anything
/// that reveals them leaves a node.
pub type Epoch = u64;

/// A client's number for one of its operations, starting at 1. A client has at most one
/// operation in flight and re-sends it under the same number, so nodes recognise a retry.
pub type OpNumber = u64;

/// The identity of one client update, unique across clients: who asked, and its number.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct UpdateId {
    /// The client (its actor id).
    pub client: u64,
    /// The client's operation number.
    pub op: OpNumber,
}

/// What a client asks of the approver.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum ClientOp<K: Payload, V: Payload> {
    /// An update of the common data (claim 1: "a request ... to update said common data").
    Update(KvOp<K, V>),
    /// A read of one key, answered by the approver (linearizable in the shipped variant).
    Read(K),
}

/// An approver's answer to a client.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum Answer<V: Payload> {
    /// The update is applied at `version` (and, in the shipped variant, stored by the backup).
    Written {
        /// The version the update made.
        version: Version,
    },
    /// The value read (`None`: absent), at the approver's `version`.
    Value {
        /// The value.
        value: Option<V>,
        /// The approver's version when it answered.
        version: Version,
    },
}

/// One approved update as it sits at a version of a node's log: who asked, in which epoch it
/// was approved, and its change (a [`crate::store::Store`] delta, so catch-up composes them).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Entry<K: Payload, V: Payload> {
    /// The epoch of the approval.
    pub epoch: Epoch,
    /// The client update.
    pub update: UpdateId,
    /// The change.
    pub delta: KvDelta<K, V>,
}

/// Every message of protocol 2.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum Msg<K: Payload, V: Payload> {
    /// Client → node: operation `op` (re-sent under the same number until answered).
    /// `master_unable` is the client's notice that the master did not answer (claim 1:
    /// "notifying said second computer system that said first computer system is unable").
    Request {
        /// The client's operation number.
        op: OpNumber,
        /// What it asks.
        request: ClientOp<K, V>,
        /// Whether the client found the master unable.
        master_unable: bool,
    },
    /// Node → client: the answer to operation `op`, from a node approving in `epoch`.
    Reply {
        /// The client's operation number.
        op: OpNumber,
        /// The approver's epoch.
        epoch: Epoch,
        /// The answer.
        answer: Answer<V>,
    },
    /// Approver → the other nodes: the update at version `prior + 1` (claim 1: "advising
    /// said second ... to make a corresponding update"). In the shipped variant the master's
    /// advice to the backup is a proposal: the backup stores it and answers
    /// [`Msg::Stored`] before the master applies it or answers the client.
    Advise {
        /// The sender's epoch.
        epoch: Epoch,
        /// The version the update applies to.
        prior: Version,
        /// The update.
        entry: Entry<K, V>,
    },
    /// Backup → master: `update` is saved here at `version`. It names the update, not only
    /// the version: a master that crashed and restarted may propose a different update at a
    /// version an old [`Msg::Stored`] names (found by the checker).
    Stored {
        /// The backup's epoch.
        epoch: Epoch,
        /// The version stored.
        version: Version,
        /// The update stored there.
        update: UpdateId,
    },
    /// Approver → the other nodes, on a timer: its epoch and version. From the master it
    /// renews the backup's lease; from a new approver it tells a returning master the new
    /// epoch; a node behind asks for a delta.
    Heartbeat {
        /// The sender's epoch.
        epoch: Epoch,
        /// The sender's version.
        version: Version,
    },
    /// Master → backup: may I still answer read `op` in `epoch`? (A master that has lost
    /// its approval must not serve stale reads.)
    Confirm {
        /// The master's epoch.
        epoch: Epoch,
        /// The client's operation number.
        op: OpNumber,
    },
    /// Backup → master: yes, `epoch` is still the backup's epoch and it has not taken over.
    Confirmed {
        /// The epoch confirmed.
        epoch: Epoch,
        /// The client's operation number.
        op: OpNumber,
    },
    /// Slave → approver: send me what follows `from` (delta catch-up, as in protocol 1).
    DeltaRequest {
        /// The slave's epoch (the approver's, learned).
        epoch: Epoch,
        /// The slave's version.
        from: Version,
    },
    /// Approver → slave: its log after `from` (delta catch-up, as in protocol 1: applied
    /// only by a slave at `from`).
    Delta {
        /// The approver's epoch.
        epoch: Epoch,
        /// The version the entries follow.
        from: Version,
        /// The updates at `from + 1` ..
        entries: Vec<Entry<K, V>>,
    },
}

impl<K: Payload, V: Payload> Msg<K, V> {
    /// The sender's epoch, for messages between nodes.
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            Msg::Request { .. } => None,
            Msg::Reply { epoch, .. }
            | Msg::Advise { epoch, .. }
            | Msg::Stored { epoch, .. }
            | Msg::Heartbeat { epoch, .. }
            | Msg::Confirm { epoch, .. }
            | Msg::Confirmed { epoch, .. }
            | Msg::DeltaRequest { epoch, .. }
            | Msg::Delta { epoch, .. } => Some(*epoch),
        }
    }
}

/// Timer tags; the runtime maps each to a duration (see `docs/failover.md`).
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Timer {
    /// An approver re-sends its heartbeat (and any proposal or confirmation still open).
    Heartbeat,
    /// The backup checks its lease: if the master has not renewed it since the last check,
    /// the lease has lapsed. In the runtime the check period is longer than the master's
    /// lease, so a master that has not renewed has stopped approving (the model abstracts
    /// the clock: the check may fire at any moment, which only makes takeovers more likely).
    LeaseCheck,
    /// A client re-sends its operation to the other node.
    Retry,
}

/// The actor index of the master (computer 1); the backup is [`BACKUP`], other slaves
/// follow and clients come last.
pub const MASTER: usize = 0;
/// The actor index of the designated backup (computer 2).
pub const BACKUP: usize = 1;
