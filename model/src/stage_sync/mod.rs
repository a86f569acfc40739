//! Protocol 4: stage-ordered peer sync (seed 003).
//!
//! Peers execute their users' operations at once, each on its own copy of a shared
//! document, and broadcast every execution with its stage (its position in the sender's
//! journal), the operation before it and a priority. Receivers execute in stage order, hold
//! early messages in a waiting list, and undo and redo journaled operations that lose their
//! stage to a higher-priority one, so that peers holding the same operations hold the same
//! journal and document. `docs/stage-sync.md` tells the story, the flaw of fixed priorities
//! and our fix, and maps every claim to code.
//!
//! - [`document`]: the shared document (an ordered list) and its undoable edits.
//! - [`msg`]: the synchronization message, priorities, reports, the users' requests.
//! - [`peer`]: the [`Peer`] actor.
//! - [`model`]: the checked system: [`StageConfig::into_model`], the ghost, the properties.

pub mod document;
pub mod model;
pub mod msg;
pub mod peer;
pub mod suite;

pub use document::{Document, Edit, Undo};
pub use model::{Scenario, StageConfig};
pub use msg::{OpId, PeerId, Priority, StageMsg, Sync, Timer};
pub use peer::{Peer, PeerState};

use serde::{Deserialize, Serialize};

/// Which priority an operation carries.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
)]
pub enum Ordering {
    /// The seed as written: the originating peer's fixed priority. The lowest-priority peer
    /// can lose every race, forever (the `starvation` property's counterexample).
    Fixed,
    /// Shipped: the operation's age first (the stage its origin first executed it at; older
    /// wins), the peer's priority as the tie-break. An operation only loses to older ones, or
    /// to ones of its own age from a higher peer, and there are finitely many of those.
    #[default]
    Aged,
}

impl Ordering {
    /// Both.
    pub const ALL: [Ordering; 2] = [Ordering::Fixed, Ordering::Aged];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Ordering::Fixed => "fixed",
            Ordering::Aged => "aged",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Ordering> {
        Ordering::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// A deliberate bug behind a model option, refuted by the checker; [`Mutant::breaks`] names
/// the property and a config that shows it.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Mutant {
    /// Claim 11 read as "delete": the lower-priority message of a stage pair is dropped from
    /// the waiting list instead of queued for execution.
    DropLowerPriority,
    /// An incoming message at a stage already executed always wins over the journaled
    /// operation (claim 12's priority comparison left out).
    IncomingWins,
    /// Undo takes operations out of the journal but leaves their edits in the document.
    UndoKeepsData,
    /// A message at the next stage executes whatever its previous operation (claim 9's
    /// check left out).
    SkipPreviousCheck,
    /// A newer execution of an operation does not replace the older one held.
    KeepRetracted,
    /// The stability line moves to the peer's own stage as soon as it holds nothing back,
    /// without the other peers' reports.
    StableEarly,
    /// A peer does not execute its own undone operations again (a liveness bug).
    NoRedo,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 7] = [
        Mutant::DropLowerPriority,
        Mutant::IncomingWins,
        Mutant::UndoKeepsData,
        Mutant::SkipPreviousCheck,
        Mutant::KeepRetracted,
        Mutant::StableEarly,
        Mutant::NoRedo,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::DropLowerPriority => "drop-lower-priority",
            Mutant::IncomingWins => "incoming-wins",
            Mutant::UndoKeepsData => "undo-keeps-data",
            Mutant::SkipPreviousCheck => "skip-previous-check",
            Mutant::KeepRetracted => "keep-retracted",
            Mutant::StableEarly => "stable-early",
            Mutant::NoRedo => "no-redo",
        }
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        match self {
            Mutant::DropLowerPriority => {
                "a lower-priority message of the same stage pair is dropped from the waiting list, not re-queued"
            }
            Mutant::IncomingWins => {
                "an incoming message at an executed stage always wins over the journaled operation"
            }
            Mutant::UndoKeepsData => "undo leaves the undone operations' edits in the document",
            Mutant::SkipPreviousCheck => {
                "a message at the next stage executes whatever its previous operation"
            }
            Mutant::KeepRetracted => {
                "a newer execution of an operation does not replace the older one held"
            }
            Mutant::StableEarly => "the stability line moves without the other peers' reports",
            Mutant::NoRedo => "a peer does not execute its own undone operations again",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The property the checker refutes, and a small config that shows it. The liveness
    /// mutant names the liveness graph check ([`model::props::CONVERGENCE_REACHABLE`]).
    pub fn breaks(self) -> (&'static str, StageConfig) {
        use model::props;
        let (property, scenario) = match self {
            Mutant::DropLowerPriority => (props::NONE_LOST, Scenario::Three),
            Mutant::IncomingWins => (props::SAME_OPS_SAME_JOURNAL, Scenario::Race),
            Mutant::UndoKeepsData => (props::DATA_IS_REPLAY, Scenario::Race),
            Mutant::SkipPreviousCheck => (props::CHAINED, Scenario::Chain),
            Mutant::KeepRetracted => (props::AT_MOST_ONCE, Scenario::Three),
            Mutant::StableEarly => (props::STABLE, Scenario::Race),
            Mutant::NoRedo => (props::CONVERGENCE_REACHABLE, Scenario::Race),
        };
        (
            property,
            StageConfig {
                mutant: Some(self),
                ..StageConfig::scenario(scenario)
            },
        )
    }
}
