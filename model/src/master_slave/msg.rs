//! The messages of protocol 1: one enum for the service layers ([`ServiceMsg`]), one for the
//! client interface of the master user layer ([`ClientMsg`]), and [`Msg`] carrying either.

use crate::store::{Store, Version};
use serde::{Deserialize, Serialize};
use stateright::actor::Id;
use stateright::{Rewrite, RewritePlan};

/// How an update is replicated, chosen by the client per update (claim 1: "based on the type
/// of delta").
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Mode {
    /// Asynchronous: the master commits at once and announces the change (claims 36, 45, 46).
    OnePhase,
    /// Synchronous: prepare, vote, commit-or-abort, with a timeout (claims 6, 28, 47).
    TwoPhase {
        /// How long the master waits for every vote before aborting, in milliseconds (claim 6).
        /// The model ignores durations; the runtime arms a timer of this length.
        timeout_ms: u64,
    },
}

/// The outcome of a two-phase update.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Outcome {
    /// Every participant prepared; the delta is committed (claim 18).
    Commit,
    /// A participant refused, the timeout fired, the client rolled back, or the master
    /// restarted undecided (claims 5, 21).
    Abort,
}

/// The master's decision on one two-phase update.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct Decision {
    /// The version the update reserved.
    pub version: Version,
    /// Commit or abort.
    pub outcome: Outcome,
}

/// What the master heartbeats until every slave has acknowledged it (claims 11, 19, 22):
/// its current committed version and its last two-phase decision.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
pub struct Beat {
    /// The master's committed version.
    pub version: Version,
    /// The master's last decision, if it ever decided one.
    pub decision: Option<Decision>,
}

/// Why an update was aborted, as reported to its client.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum AbortReason {
    /// A participant answered the prepare with Refused (claim 47c).
    Refused,
    /// Not every participant voted before the update's timeout (claim 6).
    TimedOut,
    /// The client rolled the update back before it was decided (claim 5).
    RolledBack,
    /// The master restarted while the update was undecided, so it presumed abort.
    MasterRestarted,
}

/// Messages between the master service layer (MS) and slave service layers (SS).
///
/// Every variant is safe to receive stale, duplicated or out of order: handlers compare the
/// versions it carries with the receiver's state and ignore what no longer applies.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum ServiceMsg<S: Store> {
    /// MS → every SS, one-phase: the master committed `new` on top of `prior`
    /// (claims 10, 12, 13, 14, 15, 36b, 38, 39, 44, 46). `delta` is `prior → new` when the
    /// master inlines it; without it a slave must fetch.
    Announce {
        /// The master's version before the update.
        prior: Version,
        /// The version the update created.
        new: Version,
        /// The delta `prior → new`, when small enough to inline.
        delta: Option<S::Delta>,
    },
    /// SS → MS: "send me what I miss from `from` to your current version"
    /// (claims 32, 36c, 40, 41, 46d).
    DeltaRequest {
        /// The slave's committed version.
        from: Version,
    },
    /// MS → SS: the delta `from → to`, composed by the master user layer from its history
    /// (claims 7, 8, 14, 16, 17, 36d).
    Delta {
        /// The version the delta starts from.
        from: Version,
        /// The version it reaches (the master's current one).
        to: Version,
        /// The change.
        delta: S::Delta,
    },
    /// MS → SS: the whole data at `to`, sent when the master no longer remembers the
    /// slave's version (history pruned). It answers the request from `from`: a slave that
    /// has moved since ignores it, like a stale Delta.
    Snapshot {
        /// The version of the request this answers.
        from: Version,
        /// The version of `data`.
        to: Version,
        /// The master's committed data at `to`.
        data: S,
    },
    /// MS → every SS, two-phase: "can you apply `prior → new`?" (claims 28, 47a).
    Prepare {
        /// The master's committed version the update builds on.
        prior: Version,
        /// The version the update reserved.
        new: Version,
        /// The delta `prior → new`.
        delta: S::Delta,
    },
    /// SS → MS: the slave saved the prepared delta for `version` and can commit it
    /// (claims 1, 29, 47b-c).
    Prepared {
        /// The prepared version.
        version: Version,
    },
    /// SS → MS: the slave cannot apply the delta for `version` (claim 47c).
    Refused {
        /// The refused version.
        version: Version,
    },
    /// MS → every SS: commit the prepared delta of `version` (claims 18, 20).
    Commit {
        /// The committed version.
        version: Version,
    },
    /// MS → every SS: discard the prepared delta of `version` (claims 21, 23).
    Abort {
        /// The aborted version.
        version: Version,
    },
    /// MS → every SS that has not acknowledged: the master's committed version and last
    /// decision, repeated until acknowledged (claims 11, 19, 22).
    Heartbeat(Beat),
    /// SS → MS: the slave holds everything `Beat` names (version reached, decision applied).
    HeartbeatAck(Beat),
    /// MS → every SS that has not reported, from a master whose store was lost or found
    /// damaged (issue 18): "what do you hold?" Repeated on the heartbeat timer until every
    /// slave has answered; the master serves nothing meanwhile.
    Recover,
    /// SS → MS: this slave's committed copy and the highest version it has heard of, the
    /// answer to [`ServiceMsg::Recover`] (issue 18; claims 9, 43: the recovered master hands
    /// out versions past every one a slave knows).
    Report {
        /// The slave's committed version.
        version: Version,
        /// Its committed data at `version`.
        data: S,
        /// The highest version it has heard of: committed, prepared, waiting or decided.
        seen: Version,
    },
}

/// Messages between a client (a master user or device, claim 2) and the master user layer.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum ClientMsg<S: Store> {
    /// Client → master: perform `op`, replicated by `mode`. `req` numbers the client's
    /// requests from 0; a repeated `req` is answered again, never applied twice.
    Update {
        /// The request number.
        req: u64,
        /// The change.
        op: S::Op,
        /// One-phase or two-phase.
        mode: Mode,
    },
    /// Client → master: do not replicate request `req`; abort it if still undecided (claim 5).
    Rollback {
        /// The request to roll back.
        req: u64,
    },
    /// Master → client: request `req` is committed as `version`.
    Committed {
        /// The request number.
        req: u64,
        /// The version it created.
        version: Version,
    },
    /// Master → client: request `req` (which had reserved `version`) is aborted.
    Aborted {
        /// The request number.
        req: u64,
        /// The version it had reserved, never to be used again.
        version: Version,
        /// Why.
        reason: AbortReason,
    },
}

/// Any message of protocol 1.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum Msg<S: Store> {
    /// Between service layers.
    Service(ServiceMsg<S>),
    /// Between a client and the master user layer.
    Client(ClientMsg<S>),
}

// Messages carry no actor ids, so symmetry reduction leaves them unchanged.
impl<S: Store> Rewrite<Id> for Msg<S> {
    fn rewrite<P>(&self, _plan: &RewritePlan<Id, P>) -> Self {
        self.clone()
    }
}

/// The timers of protocol 1. Durations come from configuration; the model ignores them.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Timer {
    /// Master: re-send the [`Beat`] to slaves that have not acknowledged it.
    Heartbeat,
    /// Master: the undecided two-phase update's timeout (claim 6).
    Decision,
    /// Client: re-send the outstanding request.
    Retry,
}
