//! Protocol 3: knowledge sync (seed 004).
//!
//! Every replica may change any item. Replicas synchronize pairwise, pulled by the
//! destination: it sends what it knows, the source sends each change it does not know and
//! then the knowledge the destination will have once it applied them all. Concurrent changes
//! are detected from the made-with knowledge each change carries, never overwritten
//! silently. `docs/knowledge-sync.md` tells the story and maps every claim to code.
//!
//! - [`vector`]: knowledge as version vectors with exceptions, change ids, filters.
//! - [`msg`]: changes and the seed's messages.
//! - [`replica`]: the [`Replica`] actor, source and destination in one.
//! - [`app`]: [`AppReplica`], the replica with its application's inputs (what the runtime
//!   drives).
//! - [`model`]: the checked system: [`KnowledgeConfig::into_model`], the ghost, the
//!   properties, the mutants.

pub mod app;
pub mod model;
pub mod msg;
pub mod replica;
pub mod suite;
pub mod vector;

pub use app::{AppMsg, AppReplica, ImportReport};
pub use model::{KnowledgeConfig, Scenario};
pub use msg::{Applied, Change, ConflictPolicy, SyncMsg, Timer};
pub use replica::{Edit, Replica, ReplicaData, ReplicaState, requester, session_name};
pub use vector::{
    ChangeId, Filter, FilteredKnowledge, Knowledge, ReplicaId, incarnation_of, maker, maker_name,
    replica_of,
};

use serde::{Deserialize, Serialize};

/// A deliberate bug behind a model option, refuted by the checker with a counterexample;
/// [`Mutant::breaks`] names the property.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Mutant {
    /// The destination merges a bundle's learned knowledge as soon as the complete-bundle
    /// message arrives, before all its changes are applied (against claim 4).
    MergeLearnedEarly,
    /// The change counter is kept in memory only, so a restarted replica reuses ids.
    ReuseCounterAfterCrash,
    /// A replica ignores the incarnation of its store: created again after its store was
    /// lost, it names its changes and sessions as its first incarnation did (issue 18).
    ForgetIncarnation,
    /// A sync takes bundle messages from any incarnation of its source: a source created
    /// again may answer a duplicated request a second time, and the two bundles mix.
    MixIncarnations,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 4] = [
        Mutant::MergeLearnedEarly,
        Mutant::ReuseCounterAfterCrash,
        Mutant::ForgetIncarnation,
        Mutant::MixIncarnations,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::MergeLearnedEarly => "merge-learned-early",
            Mutant::ReuseCounterAfterCrash => "reuse-counter-after-crash",
            Mutant::ForgetIncarnation => "forget-incarnation",
            Mutant::MixIncarnations => "mix-incarnations",
        }
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        match self {
            Mutant::MergeLearnedEarly => {
                "a destination merges learned knowledge before all the bundle's changes arrived"
            }
            Mutant::ReuseCounterAfterCrash => {
                "a replica does not save its change counter and reuses ids after a crash"
            }
            Mutant::ForgetIncarnation => {
                "a replica created again after its store was lost reuses its old names"
            }
            Mutant::MixIncarnations => "a sync takes the bundles of two incarnations of its source",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The property the checker refutes, and a small config that shows it.
    pub fn breaks(self) -> (&'static str, KnowledgeConfig) {
        use model::props;
        match self {
            Mutant::MergeLearnedEarly => (
                props::KNOWLEDGE_SOUND,
                KnowledgeConfig {
                    max_crashes: 0,
                    mutant: Some(self),
                    ..KnowledgeConfig::scenario(Scenario::Conflict)
                },
            ),
            Mutant::ReuseCounterAfterCrash => (
                props::UNIQUE_IDS,
                KnowledgeConfig {
                    max_crashes: 1,
                    mutant: Some(self),
                    ..KnowledgeConfig::scenario(Scenario::Recovery)
                },
            ),
            Mutant::ForgetIncarnation => (
                props::UNIQUE_SESSIONS,
                KnowledgeConfig {
                    disk_faults: 1,
                    mutant: Some(self),
                    ..KnowledgeConfig::scenario(Scenario::Conflict)
                },
            ),
            Mutant::MixIncarnations => (
                props::KNOWLEDGE_SOUND,
                KnowledgeConfig {
                    disk_faults: 1,
                    mutant: Some(self),
                    ..KnowledgeConfig::scenario(Scenario::Conflict)
                },
            ),
        }
    }
}
