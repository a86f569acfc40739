//! The master user layer (MU): the application's original copy of the data, its versions,
//! its delta history and its ledger of client requests.
//!
//! The master service layer talks to it only through the methods below: [`MasterUser::begin`]
//! (the start call of claim 36a), [`MasterUser::commit`], [`MasterUser::abort`],
//! [`MasterUser::catch_up`] (claim 17) and the read accessors.

use super::msg::ClientMsg;
use crate::store::{Store, Version};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use stateright::actor::Id;
use std::collections::VecDeque;

/// One committed change: `prior → new` by `delta`.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Step<S: Store> {
    /// The version the change builds on.
    pub prior: Version,
    /// The version it creates.
    pub new: Version,
    /// The change.
    pub delta: S::Delta,
}

/// What MU hands a lagging slave: a delta from its version, or the whole data when the
/// slave's version is no longer remembered.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum CatchUp<S: Store> {
    /// The delta from the requested version to the current one.
    Delta(S::Delta),
    /// The current data, whole.
    Snapshot(S),
}

/// Per client: the next request number expected and the reply to the last one decided.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct ClientEntry<S: Store> {
    /// Requests below this number were taken; they are answered from `last_reply`, never
    /// applied again.
    pub next_req: u64,
    /// The reply to request `next_req - 1`, once decided.
    pub last_reply: Option<ClientMsg<S>>,
}

/// The master user layer's state; all of it is saved.
///
/// # Invariants
/// - `version < next_version`: every number handed out is above every committed one.
/// - `history` is a chain: each step's `prior` is the previous step's `new`, and the last
///   step's `new` is `version`. It holds at most the configured history bound.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct MasterUser<S: Store> {
    /// The original copy of the data at `version`.
    pub data: S,
    /// The committed version of `data`.
    pub version: Version,
    /// The next version number to hand out; never decreases, so no number is reused.
    pub next_version: Version,
    /// The most recent committed steps, oldest first, for deltas between arbitrary
    /// remembered versions (claims 8, 16).
    pub history: VecDeque<Step<S>>,
    /// Requests taken per client. Structurally shared, so that copying it into every `Save`
    /// is O(1) and an update O(log n) (a `BTreeMap` here cost a copy of every entry per
    /// update: 2 ms at 30 000 clients, `benches/ledger_cost.rs`). Encoded as a map, the
    /// format a `BTreeMap` had.
    #[serde(deserialize_with = "crate::store::ordmap_cautiously")]
    pub clients: OrdMap<Id, ClientEntry<S>>,
}

impl<S: Store> MasterUser<S> {
    /// An empty original copy at version 0.
    pub fn new() -> Self {
        MasterUser {
            data: S::default(),
            version: 0,
            next_version: 1,
            history: VecDeque::new(),
            clients: OrdMap::new(),
        }
    }

    /// The start call (claims 36a, 40): turns `op` into a delta on the current data and gives
    /// it a fresh, unique version number (claims 3, 7, 9, 37, 43). The data does not change
    /// until [`MasterUser::commit`].
    pub fn begin(&mut self, op: &S::Op) -> Step<S> {
        let new = self.next_version;
        self.next_version += 1;
        Step {
            prior: self.version,
            new,
            delta: self.data.delta_of(op),
        }
    }

    /// The start call for a group of changes (group commit): one fresh version for the
    /// state after every `op` in order, and the composed delta to it. One op is exactly
    /// [`MasterUser::begin`].
    pub fn begin_all<'a>(&mut self, ops: impl IntoIterator<Item = &'a S::Op>) -> Step<S>
    where
        S::Op: 'a,
    {
        let mut ops = ops.into_iter();
        let first = ops.next().expect("a group has a member");
        let mut step = self.begin(first);
        let mut scratch: Option<S> = None;
        for op in ops {
            let data = scratch.get_or_insert_with(|| {
                let mut d = self.data.clone();
                d.apply(&step.delta);
                d
            });
            let delta = data.delta_of(op);
            data.apply(&delta);
            step.delta = S::compose(&step.delta, &delta);
        }
        step
    }

    /// Commits `step` to the original copy (claim 4) and remembers it, keeping at most
    /// `history_bound` steps.
    pub fn commit(&mut self, step: Step<S>, history_bound: usize) {
        assert_eq!(
            step.prior, self.version,
            "a step commits on top of the current version"
        );
        self.data.apply(&step.delta);
        self.version = step.new;
        self.history.push_back(step);
        while self.history.len() > history_bound {
            self.history.pop_front();
        }
    }

    /// The version a step reserved is dropped: the data stays at the prior state. The number
    /// stays used unless `reuse` (the mutant [`super::Mutant::ReuseAbortedVersion`]).
    pub fn abort(&mut self, step: &Step<S>, reuse: bool) {
        if reuse && self.next_version == step.new + 1 {
            self.next_version = step.new;
        }
    }

    /// What a slave at `from` needs to reach the current version (claims 13, 16, 17, 36d):
    /// a composed delta when `from` is remembered, otherwise a snapshot. `None` when the slave
    /// is not behind.
    pub fn catch_up(&self, from: Version) -> Option<CatchUp<S>> {
        if from >= self.version {
            return None;
        }
        let start = self.history.iter().position(|s| s.prior == from);
        Some(match start {
            Some(i) => CatchUp::Delta(
                self.history
                    .range(i..)
                    .fold(S::empty_delta(), |acc, s| S::compose(&acc, &s.delta)),
            ),
            None => CatchUp::Snapshot(self.data.clone()),
        })
    }
}
