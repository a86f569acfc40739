//! The slave server: the slave service layer (SS, this file) around the slave user layer
//! ([`SlaveUser`], the application's copy).
//!
//! ```text
//!            ┌──────────────── slave server ─────────────────┐
//!  master ──▶│ SS: compares versions, fetches, votes, acks   │──DeltaRequest/Prepared/
//!            │ SU: version, committed data, prepared delta   │  Refused/HeartbeatAck──▶ master
//!            └───────────────────────────────────────────────┘
//!                    ▲ reads (committed data only, claim 24)
//! ```

use super::master_user::Step;
use super::msg::{Beat, Msg, Outcome, ServiceMsg, Timer};
use super::slave_user::SlaveUser;
use super::{Mutant, Saved};
use crate::store::{Store, Version};
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Id, Out};
use stateright::{Rewrite, RewritePlan};
use std::borrow::Cow;
use std::marker::PhantomData;

/// What a slave saves: its whole user layer (version, data, prepared delta).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct SlaveStorage<S: Store> {
    /// The slave user layer.
    pub user: SlaveUser<S>,
    /// This storage stands for a saved state that was lost or found damaged (issue 18,
    /// [`Saved::after_damage`]): nothing of it is trusted, and the slave restarted from it
    /// rejoins empty and asks the master for everything. A slave's own saves never set it.
    #[serde(default)]
    pub lost: bool,
}

/// The slave server's state.
///
/// # Invariants
/// - `waiting`, when set, is a Prepare whose prior this slave has not reached yet; the slave
///   has asked the master for the syncing delta (claim 40).
/// - `requested` is only used by the mutant [`Mutant::NoDeltaRetry`].
#[derive(Clone, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct SlaveState<S: Store> {
    /// The slave user layer (SU).
    pub user: SlaveUser<S>,
    /// A prepare held until the syncing delta brings this copy to its prior.
    pub waiting: Option<Step<S>>,
    /// The version a delta was last requested from (mutant only).
    pub requested: Option<u64>,
    /// This run started from saved state (observability only; never read by the protocol).
    pub recovered: bool,
}

// A slave's state names no other actor.
impl<S: Store> Rewrite<Id> for SlaveState<S> {
    fn rewrite<P>(&self, _plan: &RewritePlan<Id, P>) -> Self {
        self.clone()
    }
}

/// The slave server actor.
#[derive(Clone, Debug)]
pub struct SlaveServer<S: Store> {
    /// The master server.
    pub master: Id,
    /// A deliberate bug, for showing that the checker catches it.
    pub mutant: Option<Mutant>,
    /// The store type.
    pub store: PhantomData<S>,
}

impl<S: Store> SlaveServer<S> {
    fn is(&self, mutant: Mutant) -> bool {
        self.mutant == Some(mutant)
    }

    fn send(&self, o: &mut Out<Self>, msg: ServiceMsg<S>) {
        o.send(self.master, Msg::Service(msg));
    }

    fn save(&self, state: &SlaveState<S>, o: &mut Out<Self>) {
        o.save(Saved::Slave(SlaveStorage {
            user: state.user.clone(),
            lost: false,
        }));
    }

    /// Asks the master for everything after this slave's version (claims 32, 36c, 41, 46d).
    fn request_delta(&self, state: &mut Cow<SlaveState<S>>, o: &mut Out<Self>) {
        let from = state.user.version;
        if self.is(Mutant::NoDeltaRetry) {
            if state.requested == Some(from) {
                return;
            }
            state.to_mut().requested = Some(from);
        }
        self.send(o, ServiceMsg::DeltaRequest { from });
    }

    /// Votes on `step` once this copy is at its prior (claims 29, 47b-c): Prepared after the
    /// prepared delta is saved, or Refused.
    fn vote(&self, state: &mut SlaveState<S>, o: &mut Out<Self>, step: Step<S>) {
        let version = step.new;
        if state
            .user
            .prepare(step, self.is(Mutant::ExposePreparedData))
        {
            if !self.is(Mutant::VoteWithoutSaving) {
                self.save(state, o);
            }
            self.send(o, ServiceMsg::Prepared { version });
        } else {
            self.send(o, ServiceMsg::Refused { version });
        }
    }

    /// After the committed version moved: take the waiting prepare if this copy reached its
    /// prior, drop it if the copy went past it, and save.
    fn after_catch_up(&self, state: &mut SlaveState<S>, o: &mut Out<Self>) {
        self.save(state, o);
        if let Some(step) = state.waiting.take() {
            if step.prior == state.user.version {
                self.vote(state, o, step);
            } else if step.prior > state.user.version {
                state.waiting = Some(step);
            }
            // Past its prior: the master decided it already.
        }
    }

    fn on_service(&self, state: &mut Cow<SlaveState<S>>, msg: ServiceMsg<S>, o: &mut Out<Self>) {
        let version = state.user.version;
        match msg {
            ServiceMsg::Announce { prior, new, delta } => {
                if version >= new {
                    // Already at or past it: a duplicate or a late announcement.
                    return;
                }
                match delta {
                    Some(delta) if self.is(Mutant::ApplyWithoutPriorCheck) => {
                        let user = &mut state.to_mut().user;
                        user.data.apply(&delta);
                        user.version = new;
                        self.save(state, o);
                    }
                    // Claims 45, 46c: at the prior version, commit at once.
                    Some(delta) if version == prior => {
                        let state = state.to_mut();
                        state.user.commit_delta(prior, new, &delta);
                        self.after_catch_up(state, o);
                    }
                    // Behind, or no inline delta: fetch (claims 36c, 41, 46d).
                    _ => self.request_delta(state, o),
                }
            }
            ServiceMsg::Delta { from, to, delta } => {
                if version == from && to > version {
                    let state = state.to_mut();
                    state.user.commit_delta(from, to, &delta);
                    self.after_catch_up(state, o);
                }
                // Otherwise stale: this copy moved since it asked.
            }
            ServiceMsg::Snapshot { to, data, .. }
                if self.is(Mutant::AcceptBackwardSnapshot) && to != version =>
            {
                let state = state.to_mut();
                state.user.data = data;
                state.user.version = to;
                state.user.prepared = None;
                self.after_catch_up(state, o);
            }
            ServiceMsg::Snapshot { from, to, data } => {
                if version == from && to > version {
                    let state = state.to_mut();
                    state.user.restore(to, data);
                    self.after_catch_up(state, o);
                }
            }
            ServiceMsg::Prepare { prior, new, delta } => {
                let step = Step { prior, new, delta };
                if version >= new || new <= state.user.decided {
                    // Already past it, or its decision is known: a late duplicate.
                } else if state.user.prepared.as_ref().is_some_and(|p| p.new > new) {
                    // Older than the delta this slave holds prepared: the master proposes
                    // increasing versions one at a time, so this one was decided already.
                } else if state.user.prepared.as_ref().is_some_and(|p| p.new == new) {
                    // A repeated prepare: the vote may have been lost; vote again.
                    self.send(o, ServiceMsg::Prepared { version: new });
                } else if version < prior {
                    // Claim 40: first fetch the syncing delta up to the prior version.
                    if state.waiting.as_ref() != Some(&step) {
                        state.to_mut().waiting = Some(step);
                    }
                    self.request_delta(state, o);
                } else if version == prior {
                    self.vote(state.to_mut(), o, step);
                }
                // version between prior and new cannot happen: versions come from the master.
            }
            ServiceMsg::Commit { version: v } => {
                if state.user.prepared.as_ref().is_some_and(|p| p.new == v) {
                    let state = state.to_mut();
                    state
                        .user
                        .commit_prepared(v, self.is(Mutant::ExposePreparedData));
                    self.after_catch_up(state, o);
                } else if version < v {
                    // Missed the prepare (or lost it in a crash): fetch instead.
                    self.learn_decision(state, v, o);
                    self.request_delta(state, o);
                }
            }
            ServiceMsg::Abort { version: v } => self.learn_decision(state, v, o),
            ServiceMsg::Heartbeat(beat) => self.on_heartbeat(state, beat, o),
            ServiceMsg::Recover => {
                // A master rebuilding a lost store (issue 18): this copy, and the highest
                // version this slave has heard of, so the master hands out none of them again.
                let user = &state.user;
                let seen = [
                    user.prepared.as_ref().map(|p| p.new),
                    state.waiting.as_ref().map(|w| w.new),
                ]
                .into_iter()
                .flatten()
                .fold(user.version.max(user.decided), Version::max);
                self.send(
                    o,
                    ServiceMsg::Report {
                        version: user.version,
                        data: user.data.clone(),
                        seen,
                    },
                );
            }
            // Slave-to-master messages never arrive at a slave (only by a stray sender).
            ServiceMsg::DeltaRequest { .. }
            | ServiceMsg::Prepared { .. }
            | ServiceMsg::Refused { .. }
            | ServiceMsg::HeartbeatAck(_)
            | ServiceMsg::Report { .. } => {}
        }
    }

    /// The master decided `v` (and, deciding in order, everything before it): a prepared or
    /// waiting update at or below `v` that this slave did not commit was aborted, or will come
    /// by delta (claims 27, 35). Saved, so a late Prepare of `v` is ignored after a restart too.
    fn learn_decision(&self, state: &mut Cow<SlaveState<S>>, v: u64, o: &mut Out<Self>) {
        if state.user.decided.max(state.user.version) >= v {
            // Known already (a committed version implies its decision).
            return;
        }
        let state = state.to_mut();
        state.user.decided = v;
        if state.waiting.as_ref().is_some_and(|w| w.new <= v) {
            state.waiting = None;
        }
        state.user.abort_prepared(v);
        self.save(state, o);
    }

    /// A heartbeat repairs every lost message (claims 11, 19, 22): it delivers the last
    /// decision, reveals that this slave is behind, and is acknowledged once it is not.
    fn on_heartbeat(&self, state: &mut Cow<SlaveState<S>>, beat: Beat, o: &mut Out<Self>) {
        if let Some(d) = beat.decision {
            let prepared = state.user.prepared.as_ref().map(|p| p.new);
            match (prepared, d.outcome) {
                (Some(p), Outcome::Commit) if p == d.version => {
                    let state = state.to_mut();
                    state
                        .user
                        .commit_prepared(p, self.is(Mutant::ExposePreparedData));
                    self.after_catch_up(state, o);
                }
                // Aborted, or an older prepared delta whose decision this slave missed: the
                // master decided a later update, so this one was decided too; if it was
                // committed, the fetch below brings it.
                _ => self.learn_decision(state, d.version, o),
            }
        }
        let version = state.user.version;
        if version < beat.version {
            self.request_delta(state, o);
        } else {
            // In sync: at the beat's version, holding no delta the beat already decided.
            self.send(o, ServiceMsg::HeartbeatAck(beat));
        }
    }
}

impl<S: Store> Actor for SlaveServer<S> {
    type Msg = Msg<S>;
    type State = SlaveState<S>;
    type Timer = Timer;
    type Storage = Saved<S>;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        // Claims 30, 42: resume from the copy cached on local disk; heartbeats do the rest.
        let (user, recovered) = match storage {
            Some(Saved::Slave(saved)) if !saved.lost || self.is(Mutant::ServeDamagedCopy) => {
                (saved.user.clone(), true)
            }
            Some(Saved::Slave(_)) => {
                // The copy on disk was lost or damaged: it is discarded, never served. The
                // slave rejoins empty, at version 0, saves that, and asks the master for
                // everything at once (claims 32, 41: a delta from 0, or a snapshot) rather
                // than wait for the next heartbeat, which may have stopped.
                let state = SlaveState::default();
                self.save(&state, o);
                self.send(o, ServiceMsg::DeltaRequest { from: 0 });
                return state;
            }
            _ => (SlaveUser::default(), false),
        };
        SlaveState {
            user,
            waiting: None,
            requested: None,
            recovered,
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        match msg {
            // Only the master's service layer speaks to a slave's.
            Msg::Service(msg) if src == self.master => self.on_service(state, msg, o),
            Msg::Service(_) | Msg::Client(_) => {}
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        _state: &mut Cow<Self::State>,
        _timer: &Self::Timer,
        _o: &mut Out<Self>,
    ) {
        // A slave sets no timers: the master's heartbeat drives every repair.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KvOp, ModelKv};

    fn slave() -> SlaveServer<ModelKv> {
        SlaveServer {
            master: Id::from(0),
            mutant: None,
            store: PhantomData,
        }
    }

    fn delta(k: u8, v: u8) -> <ModelKv as Store>::Delta {
        ModelKv::default().delta_of(&KvOp::Put(k, v))
    }

    fn step(
        s: &SlaveServer<ModelKv>,
        state: SlaveState<ModelKv>,
        msg: ServiceMsg<ModelKv>,
    ) -> (SlaveState<ModelKv>, Vec<String>) {
        let mut cow = Cow::Owned(state);
        let mut out = Out::new();
        s.on_msg(
            Id::from(1),
            &mut cow,
            Id::from(0),
            Msg::Service(msg),
            &mut out,
        );
        (
            cow.into_owned(),
            out.iter().map(|c| format!("{c:?}")).collect(),
        )
    }

    #[test]
    fn announce_at_prior_commits_and_saves_without_sending() {
        let s = slave();
        let (state, cmds) = step(
            &s,
            SlaveState::default(),
            ServiceMsg::Announce {
                prior: 0,
                new: 1,
                delta: Some(delta(0, 7)),
            },
        );
        assert_eq!(state.user.version, 1);
        assert_eq!(state.user.data.read(&0), Some(&7));
        assert_eq!(cmds.len(), 1);
        assert!(cmds[0].starts_with("Save(Slave("), "{cmds:?}");
    }

    #[test]
    fn announce_when_behind_requests_a_delta_and_changes_nothing() {
        let s = slave();
        let (state, cmds) = step(
            &s,
            SlaveState::default(),
            ServiceMsg::Announce {
                prior: 1,
                new: 2,
                delta: Some(delta(0, 7)),
            },
        );
        assert_eq!(state, SlaveState::default());
        assert_eq!(
            cmds,
            vec!["Send(Id(0), Service(DeltaRequest { from: 0 }))".to_string()]
        );
    }

    #[test]
    fn prepare_saves_before_voting_and_reads_stay_committed() {
        let s = slave();
        let (state, cmds) = step(
            &s,
            SlaveState::default(),
            ServiceMsg::Prepare {
                prior: 0,
                new: 1,
                delta: delta(1, 9),
            },
        );
        assert_eq!(state.user.version, 0);
        assert_eq!(
            state.user.data.read(&1),
            None,
            "prepared data is not readable"
        );
        assert_eq!(state.user.prepared.as_ref().map(|p| p.new), Some(1));
        assert_eq!(cmds.len(), 2);
        assert!(cmds[0].starts_with("Save(Slave("));
        assert_eq!(cmds[1], "Send(Id(0), Service(Prepared { version: 1 }))");
    }

    #[test]
    fn a_late_prepare_after_its_abort_is_ignored() {
        let s = slave();
        let (state, _) = step(&s, SlaveState::default(), ServiceMsg::Abort { version: 1 });
        assert_eq!(state.user.decided, 1);
        let (after, cmds) = step(
            &s,
            state.clone(),
            ServiceMsg::Prepare {
                prior: 0,
                new: 1,
                delta: delta(1, 9),
            },
        );
        assert_eq!(after, state);
        assert!(cmds.is_empty());
    }

    #[test]
    fn a_copy_found_damaged_is_discarded_and_the_slave_asks_for_everything() {
        let s = slave();
        let (committed, _) = step(
            &s,
            SlaveState::default(),
            ServiceMsg::Announce {
                prior: 0,
                new: 1,
                delta: Some(delta(0, 7)),
            },
        );
        let damaged = Saved::Slave(SlaveStorage {
            user: SlaveUser {
                data: ModelKv::default(),
                ..committed.user
            },
            lost: true,
        });
        let mut out = Out::new();
        let state = s.on_start(Id::from(1), &Some(damaged), &mut out);
        assert_eq!(state, SlaveState::default());
        let cmds: Vec<String> = out.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(
            cmds,
            vec![
                format!(
                    "{:?}",
                    stateright::actor::Command::<Msg<ModelKv>, Timer, (), Saved<ModelKv>>::Save(
                        Saved::Slave(SlaveStorage {
                            user: SlaveUser::default(),
                            lost: false,
                        })
                    )
                ),
                "Send(Id(0), Service(DeltaRequest { from: 0 }))".to_string(),
            ]
        );
    }

    #[test]
    fn duplicate_commit_is_a_no_op() {
        let s = slave();
        let (state, _) = step(
            &s,
            SlaveState::default(),
            ServiceMsg::Prepare {
                prior: 0,
                new: 1,
                delta: delta(1, 9),
            },
        );
        let (state, _) = step(&s, state, ServiceMsg::Commit { version: 1 });
        assert_eq!(state.user.version, 1);
        let mut cow = Cow::Borrowed(&state);
        let mut out = Out::new();
        s.on_msg(
            Id::from(1),
            &mut cow,
            Id::from(0),
            Msg::Service(ServiceMsg::Commit { version: 1 }),
            &mut out,
        );
        assert!(
            matches!(cow, Cow::Borrowed(_)),
            "a duplicate must not touch the state"
        );
        assert!(out.is_empty());
    }
}
