//! The slave user layer (SU): the application's copy of the data on a slave, persistently
//! cached on local disk (claims 30, 42), and the prepared delta of a two-phase update.
//!
//! The slave service layer talks to it only through the methods below.

use super::master_user::Step;
use crate::store::{Store, Version};
use serde::{Deserialize, Serialize};

/// The slave user layer's state; all of it is saved.
///
/// # Invariants
/// - `data` is the master's committed data at `version`; reads see nothing else
///   (never a prepared delta).
/// - `prepared`, when set, builds on `version` (`prepared.prior == version`).
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct SlaveUser<S: Store> {
    /// The committed version of `data` (claims 25, 31, 33).
    pub version: Version,
    /// The committed copy of the data.
    pub data: S,
    /// The delta saved by a Prepared vote, until the decision arrives (claims 28, 29).
    pub prepared: Option<Step<S>>,
    /// The highest version above `version` whose two-phase decision this slave has learned
    /// (a committed `version` already implies the decisions below it, so this is only raised
    /// by news beyond it). A prepare at or below it is stale (the master proposes increasing versions, one at a time) and is
    /// never voted on, so no decided update can leave a prepared delta behind.
    pub decided: Version,
}

impl<S: Store> SlaveUser<S> {
    /// Commits `from → to` if this copy is at `from` (claims 26, 31, 45, 46c). Returns
    /// whether it did. A prepared delta is dropped: the master's version moved past its
    /// prior, so it was decided (and if it was committed, `delta` contains it).
    pub fn commit_delta(&mut self, from: Version, to: Version, delta: &S::Delta) -> bool {
        if self.version != from || to <= from {
            return false;
        }
        self.data.apply(delta);
        self.version = to;
        self.prepared = None;
        true
    }

    /// Replaces the copy by the master's data at `to`, if newer. Returns whether it did.
    pub fn restore(&mut self, to: Version, data: S) -> bool {
        if to <= self.version {
            return false;
        }
        self.data = data;
        self.version = to;
        self.prepared = None;
        true
    }

    /// Processes a prepare (claims 28, 29, 47b): can this copy take `step`? If so, holds it
    /// as the prepared delta. With `expose` (the mutant
    /// [`super::Mutant::ExposePreparedData`]) the delta is also written into the data that
    /// reads see.
    pub fn prepare(&mut self, step: Step<S>, expose: bool) -> bool {
        if step.prior != self.version
            || step.new <= self.decided
            || !self.data.can_apply(&step.delta)
        {
            return false;
        }
        if expose {
            self.data.apply(&step.delta);
        }
        self.prepared = Some(step);
        true
    }

    /// Commits the prepared delta of `version` (claims 26, 34). Returns whether it did.
    pub fn commit_prepared(&mut self, version: Version, exposed: bool) -> bool {
        match self.prepared.take() {
            Some(step) if step.new == version => {
                if !exposed {
                    self.data.apply(&step.delta);
                }
                self.version = step.new;
                true
            }
            other => {
                self.prepared = other;
                false
            }
        }
    }

    /// Discards the prepared delta of `version` (claims 27, 35), or any prepared delta older
    /// than it. Returns whether it did.
    pub fn abort_prepared(&mut self, version: Version) -> bool {
        if self.prepared.as_ref().is_some_and(|p| p.new <= version) {
            self.prepared = None;
            return true;
        }
        false
    }
}
