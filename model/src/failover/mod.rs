//! Protocol 2: a failover approver (seed 002), an extension of the master/slave scheme.
//!
//! The master (computer 1) has the sole right to approve updates while it is able; a
//! designated backup (computer 2) approves when the master is unable; a client (computer 3)
//! that finds the master unable sends its update to the backup and tells it so (claim 1).
//!
//! Two variants share one [`node::FailoverNode`] actor:
//! - [`Variant::Seed`], the claim as written: the backup starts approving on a client's
//!   notice. The checker refutes it when the master is partitioned or slow rather than down
//!   (two approvers, different updates at one version, an acknowledged update missing at the
//!   backup, a stale read).
//! - [`Variant::Fenced`], the shipped one: approval epochs on every message, fenced; the
//!   master answers a client only after the backup stored the update; the backup takes over
//!   only when the master's lease lapsed; a returning master learns the new epoch, follows
//!   as a slave and catches up by delta.
//!
//! `docs/failover.md` tells the story, shows the seed's counterexamples and maps the claim.
//!
//! - [`msg`]: messages, timers, epochs.
//! - [`node`]: the server actor (master, backup, approver, slave).
//! - [`client`]: a scripted client that fails over by itself.
//! - [`model`]: the checked system: [`FailoverConfig::into_model`], the ghost, the
//!   properties.

pub mod client;
pub mod model;
pub mod msg;
pub mod node;
pub mod suite;

pub use client::{ClientState, FailoverClient, Rules, SubmitClient, SubmitMsg, SubmitState};
pub use model::{FailoverConfig, Member, MemberState};
pub use msg::{Answer, ClientOp, Entry, Epoch, Msg, OpNumber, Timer, UpdateId};
pub use node::{FailoverNode, NodeState, NodeStorage, Pending, Role, Timing};

use serde::{Deserialize, Serialize};

/// Which rules the servers follow.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Variant {
    /// Claim 1 of seed 002 as written: no epochs, the master answers at once, the backup
    /// approves on a client's notice that the master is unable.
    Seed,
    /// The shipped scheme: fenced epochs, acknowledgement after the backup stored, takeover
    /// on a lapsed lease, rejoin by delta.
    Fenced,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 2] = [Variant::Seed, Variant::Fenced];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Seed => "seed",
            Variant::Fenced => "fenced",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// A deliberate bug in the fenced variant, refuted by the checker; [`Mutant::breaks`] names
/// the property.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub enum Mutant {
    /// The master applies and acknowledges an update before the backup stored it (the
    /// seed's order).
    AckBeforeStored,
    /// The master applies an update before the backup stored it (but answers after).
    ApplyBeforeStored,
    /// The backup takes over without raising the epoch.
    SameEpoch,
    /// Servers act on messages from lower epochs (the new approver still stores the old
    /// master's proposals and confirms its reads).
    NoFencing,
    /// The backup never takes over.
    NoTakeover,
    /// A slave never asks for the updates it is missing.
    NoCatchUp,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 6] = [
        Mutant::AckBeforeStored,
        Mutant::ApplyBeforeStored,
        Mutant::SameEpoch,
        Mutant::NoFencing,
        Mutant::NoTakeover,
        Mutant::NoCatchUp,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::AckBeforeStored => "ack-before-stored",
            Mutant::ApplyBeforeStored => "apply-before-stored",
            Mutant::SameEpoch => "same-epoch",
            Mutant::NoFencing => "no-fencing",
            Mutant::NoTakeover => "no-takeover",
            Mutant::NoCatchUp => "no-catch-up",
        }
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        match self {
            Mutant::AckBeforeStored => {
                "the master applies and acknowledges an update before the backup stored it"
            }
            Mutant::ApplyBeforeStored => "the master applies an update before the backup stored it",
            Mutant::SameEpoch => "the backup takes over without raising the epoch",
            Mutant::NoFencing => "servers act on messages from lower epochs",
            Mutant::NoTakeover => "the backup never takes over",
            Mutant::NoCatchUp => "a slave never asks for the updates it is missing",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The property the checker refutes, and a small config that shows it.
    pub fn breaks(self) -> (&'static str, FailoverConfig) {
        use model::props;
        let cfg = FailoverConfig {
            mutant: Some(self),
            ..FailoverConfig::default()
        };
        let prop = match self {
            Mutant::AckBeforeStored => props::ACKED_SURVIVE,
            Mutant::ApplyBeforeStored => props::NO_DIVERGENCE,
            Mutant::SameEpoch => props::ONE_APPROVER,
            Mutant::NoFencing => {
                // A stale read needs a read after a write; crashes add nothing.
                let cfg = FailoverConfig {
                    script: model::try_script("w1,r").expect("a valid script"),
                    max_crashes: 0,
                    ..cfg
                };
                return (props::LINEARIZABLE, cfg);
            }
            Mutant::NoTakeover | Mutant::NoCatchUp => props::PENDING_COMPLETE,
        };
        (prop, cfg)
    }
}
