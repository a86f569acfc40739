//! Protocol 1: master/slave replication (seeds 000 and 001).
//!
//! A master server (master user layer MU + master service layer MS) replicates its original
//! copy to slave servers (slave service layer SS + slave user layer SU), by one-phase
//! announcements or two-phase prepare/commit, repaired by heartbeats. `docs/protocol.md`
//! tells the story; each rule is written once, at the handler that implements it.
//!
//! - [`master`]: MS, the [`MasterServer`] actor; [`master_user`]: MU.
//! - [`slave`]: SS, the [`SlaveServer`] actor; [`slave_user`]: SU.
//! - [`client`]: a scripted client of MU.
//! - [`model`]: the checked system: [`MasterSlaveConfig::into_model`], the ghost history,
//!   the properties, symmetry.

pub mod client;
pub mod master;
pub mod master_user;
pub mod model;
pub mod msg;
pub mod slave;
pub mod slave_user;

pub use client::{ScriptClient, ScriptStep, SubmitClient, SubmitMsg, SubmitState, UpdateKind};
pub use master::{MasterServer, MasterState, MasterStorage};
pub use model::{Ghost, MasterSlaveConfig, NetworkKind, Node, NodeState};
pub use msg::{AbortReason, Beat, ClientMsg, Decision, Mode, Msg, Outcome, ServiceMsg, Timer};
pub use slave::{SlaveServer, SlaveState, SlaveStorage};

use crate::store::Store;
use serde::{Deserialize, Serialize};
use stateright::actor::Id;
use stateright::{Rewrite, RewritePlan};

/// What any actor of protocol 1 saves (`Out::save`); restored by `on_start` after a crash.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub enum Saved<S: Store> {
    /// The master's saved state.
    Master(MasterStorage<S>),
    /// A slave's saved state.
    Slave(SlaveStorage<S>),
    /// A master's saved state that was lost or found damaged (issue 18): nothing of it is
    /// trusted. The master restarted from it rebuilds its state from its slaves before it
    /// serves ([`MasterState::recovery`]), and saves this marker first, so a crash during
    /// the rebuild starts it again rather than a fresh cluster.
    MasterLost,
}

impl<S: Store> Saved<S> {
    /// The committed version this saved state restores: none (0) when it was found lost or
    /// damaged ([`SlaveStorage::lost`]), whatever version it still names.
    pub fn version(&self) -> u64 {
        match self {
            Saved::Master(m) => m.user.version,
            Saved::Slave(s) if s.lost => 0,
            Saved::Slave(s) => s.user.version,
            Saved::MasterLost => 0,
        }
    }

    /// What a server restarts from when its saved state is found damaged (issue 18).
    ///
    /// A slave rejoins empty and catches up from the master ([`SlaveStorage::lost`]): its
    /// copy is a cache of the master's (claims 30, 42), so nothing committed is lost while
    /// the master holds it. A master rebuilds from its slaves before it serves
    /// ([`Saved::MasterLost`]): it takes the most advanced slave's copy and hands out
    /// versions past every one a slave has heard of, never a version again (claims 9, 37,
    /// 43). What only the lost store held (the client ledger, a version no slave reached)
    /// is gone; `docs/reliability.md` states the assumption.
    pub fn after_damage(master: bool) -> Option<Saved<S>> {
        Some(if master {
            Saved::MasterLost
        } else {
            Saved::Slave(SlaveStorage {
                user: slave_user::SlaveUser::default(),
                lost: true,
            })
        })
    }
}

// Saved states name no other actor.
impl<S: Store> Rewrite<Id> for Saved<S> {
    fn rewrite<P>(&self, _plan: &RewritePlan<Id, P>) -> Self {
        self.clone()
    }
}

/// A deliberate bug behind a model option. Each one is refuted by the checker with a
/// counterexample; [`Mutant::breaks`] names the property it breaks.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Mutant {
    /// A slave applies an announcement's delta without checking it is at the prior version.
    ApplyWithoutPriorCheck,
    /// The master commits once a majority, not every participant, voted Prepared.
    CommitOnMajority,
    /// A slave votes Prepared without saving the prepared delta.
    VoteWithoutSaving,
    /// The master hands out an aborted version number again.
    ReuseAbortedVersion,
    /// The master does not save its decision, so a crash forgets it.
    ForgetDecisionOnCrash,
    /// A slave writes a prepared delta into the data that reads see.
    ExposePreparedData,
    /// The master announces a one-phase update without saving it first.
    AnnounceBeforeSave,
    /// A slave asks for a missing delta only once per version, so a lost reply strands it
    /// (a liveness bug that Stateright's `Eventually` cannot see: the heartbeat never stops).
    NoDeltaRetry,
    /// The master heartbeats only once instead of until acknowledged (a liveness bug).
    HeartbeatOnce,
    /// The master acknowledges a one-phase update and announces it, but applies an empty
    /// change: consistently wrong, so every slave agrees with it.
    AckWithoutApplying,
    /// Group commit applies only the first member's change, yet tells every member it
    /// committed.
    GroupLosesMember,
    /// A slave whose saved copy was found damaged resumes from it as if it were intact,
    /// instead of discarding it and rejoining empty.
    ServeDamagedCopy,
    /// A slave takes a snapshot that is not newer than its copy (any snapshot whose version
    /// differs from its own), so a late one moves it backwards.
    AcceptBackwardSnapshot,
    /// A master rebuilding from its slaves takes the first slave's report, not every one, so
    /// a lagging slave's copy can become the master's and its versions are handed out again.
    RecoverFromOneSlave,
    /// A master rebuilding from its slaves restarts its version counter after the copy it
    /// took, not past every version a slave has heard of, so an aborted version is used
    /// again.
    RecoverCounterFromCopy,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 15] = [
        Mutant::ApplyWithoutPriorCheck,
        Mutant::CommitOnMajority,
        Mutant::VoteWithoutSaving,
        Mutant::ReuseAbortedVersion,
        Mutant::ForgetDecisionOnCrash,
        Mutant::ExposePreparedData,
        Mutant::AnnounceBeforeSave,
        Mutant::NoDeltaRetry,
        Mutant::HeartbeatOnce,
        Mutant::AckWithoutApplying,
        Mutant::GroupLosesMember,
        Mutant::ServeDamagedCopy,
        Mutant::AcceptBackwardSnapshot,
        Mutant::RecoverFromOneSlave,
        Mutant::RecoverCounterFromCopy,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::ApplyWithoutPriorCheck => "apply-without-prior-check",
            Mutant::CommitOnMajority => "commit-on-majority",
            Mutant::VoteWithoutSaving => "vote-without-saving",
            Mutant::ReuseAbortedVersion => "reuse-aborted-version",
            Mutant::ForgetDecisionOnCrash => "forget-decision-on-crash",
            Mutant::ExposePreparedData => "expose-prepared-data",
            Mutant::AnnounceBeforeSave => "announce-before-save",
            Mutant::NoDeltaRetry => "no-delta-retry",
            Mutant::HeartbeatOnce => "heartbeat-once",
            Mutant::AckWithoutApplying => "ack-without-applying",
            Mutant::GroupLosesMember => "group-loses-member",
            Mutant::ServeDamagedCopy => "serve-damaged-copy",
            Mutant::AcceptBackwardSnapshot => "accept-backward-snapshot",
            Mutant::RecoverFromOneSlave => "recover-from-one-slave",
            Mutant::RecoverCounterFromCopy => "recover-counter-from-copy",
        }
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        match self {
            Mutant::ApplyWithoutPriorCheck => {
                "a slave applies an announcement without checking the prior version"
            }
            Mutant::CommitOnMajority => "the master commits on a majority instead of all votes",
            Mutant::VoteWithoutSaving => "a slave votes Prepared without saving the prepared delta",
            Mutant::ReuseAbortedVersion => "the master reuses an aborted version number",
            Mutant::ForgetDecisionOnCrash => "the master forgets its decision on a crash",
            Mutant::ExposePreparedData => "a slave exposes prepared data to reads",
            Mutant::AnnounceBeforeSave => {
                "the master announces a one-phase update before saving it"
            }
            Mutant::NoDeltaRetry => "a slave never re-requests a lost delta",
            Mutant::HeartbeatOnce => "the master stops heartbeating after one round",
            Mutant::AckWithoutApplying => {
                "the master acknowledges and announces a one-phase update it never applied"
            }
            Mutant::GroupLosesMember => "group commit drops every member's change but the first",
            Mutant::ServeDamagedCopy => {
                "a slave resumes from a saved copy found damaged as if it were intact"
            }
            Mutant::AcceptBackwardSnapshot => {
                "a slave takes a snapshot older than its copy and moves backwards"
            }
            Mutant::RecoverFromOneSlave => {
                "a master rebuilding its lost store trusts the first slave that reports"
            }
            Mutant::RecoverCounterFromCopy => {
                "a master rebuilding its lost store restarts its counter after the copy it took"
            }
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The property the checker refutes, and the smallest config known to show it.
    pub fn breaks(self) -> (&'static str, MasterSlaveConfig) {
        use model::props;
        let base = MasterSlaveConfig {
            mutant: Some(self),
            ..MasterSlaveConfig::default()
        };
        match self {
            Mutant::ApplyWithoutPriorCheck => (
                props::SLAVE_DATA,
                MasterSlaveConfig {
                    script: model::script("1p,1p"),
                    max_crashes: 0,
                    ..base
                },
            ),
            // A majority differs from "all" only from three participants on.
            Mutant::CommitOnMajority => (
                props::COMMIT_VALIDITY,
                MasterSlaveConfig {
                    slaves: 3,
                    script: model::script("2p"),
                    max_crashes: 0,
                    ..base
                },
            ),
            Mutant::VoteWithoutSaving => (props::DURABLE_VOTES, base),
            Mutant::ReuseAbortedVersion => (
                props::NO_ABORTED_VISIBLE,
                MasterSlaveConfig {
                    max_crashes: 0,
                    ..base
                },
            ),
            Mutant::ForgetDecisionOnCrash => (props::AGREEMENT, base),
            Mutant::ExposePreparedData => (
                props::SLAVE_DATA,
                MasterSlaveConfig {
                    max_crashes: 0,
                    ..base
                },
            ),
            Mutant::AnnounceBeforeSave => (
                props::UNIQUE_VERSIONS,
                MasterSlaveConfig {
                    script: model::script("1p,1p"),
                    ..base
                },
            ),
            // Liveness mutants need message loss, so they run on a small lossy config.
            Mutant::NoDeltaRetry => (
                props::CONVERGENCE_REACHABLE,
                MasterSlaveConfig {
                    slaves: 1,
                    script: model::script("1p"),
                    max_crashes: 0,
                    ..base
                },
            ),
            Mutant::HeartbeatOnce => (
                props::CONVERGES,
                MasterSlaveConfig {
                    slaves: 1,
                    script: model::script("1p"),
                    max_crashes: 0,
                    ..base
                },
            ),
            // Every node agrees with the master: only the end-to-end property sees it.
            Mutant::AckWithoutApplying => (
                props::ACKNOWLEDGED_REPLAY,
                MasterSlaveConfig {
                    slaves: 1,
                    script: model::script("1p,1p"),
                    max_crashes: 0,
                    ..base
                },
            ),
            // Three clients so that requests queue behind a round; own keys so that the
            // lost member's change cannot coincide with another's.
            Mutant::GroupLosesMember => (
                props::ACKNOWLEDGED_REPLAY,
                MasterSlaveConfig {
                    slaves: 1,
                    script: model::script("2p"),
                    clients: 3,
                    own_keys: true,
                    max_crashes: 0,
                    ..base
                },
            ),
            // Storage faults (issue 18): a slave's store damaged while it is down.
            Mutant::ServeDamagedCopy => (
                props::SLAVE_DATA,
                MasterSlaveConfig {
                    slaves: 1,
                    script: model::script("1p"),
                    disk_faults: 1,
                    ..base
                },
            ),
            Mutant::AcceptBackwardSnapshot => (
                props::MONOTONIC,
                MasterSlaveConfig {
                    slaves: 1,
                    script: model::script("1p,1p"),
                    disk_faults: 1,
                    ..base
                },
            ),
            // The master's store lost: two slaves, one of them behind when it is lost.
            Mutant::RecoverFromOneSlave => (
                props::UNIQUE_VERSIONS,
                MasterSlaveConfig {
                    slaves: 2,
                    script: model::script("1p,1p"),
                    disk_faults: 1,
                    master_faults: true,
                    ..base
                },
            ),
            // An aborted version that only the slave remembers.
            Mutant::RecoverCounterFromCopy => (
                props::AGREEMENT,
                MasterSlaveConfig {
                    slaves: 1,
                    script: model::script("2p,1p"),
                    disk_faults: 1,
                    master_faults: true,
                    ..base
                },
            ),
        }
    }
}
