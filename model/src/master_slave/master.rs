//! The master server: the master service layer (MS, the replication engine, this file)
//! around the master user layer ([`MasterUser`], the original copy).
//!
//! ```text
//!  clients ──Update/Rollback──▶ ┌──────────── master server ────────────┐
//!          ◀─Committed/Aborted─ │ MU: data, versions, history, ledger   │
//!                               │ MS: pending 2PC, votes, decision, acks│
//!  slaves ──DeltaRequest, ────▶ │                                       │ ──Announce/Prepare/Commit/
//!           Prepared/Refused,   └───────────────────────────────────────┘   Abort/Heartbeat/Delta──▶ slaves
//!           HeartbeatAck
//! ```

use super::master_user::{CatchUp, MasterUser, Step};
use super::msg::{AbortReason, Beat, ClientMsg, Decision, Mode, Msg, Outcome, ServiceMsg, Timer};
use super::{Mutant, Saved};
use crate::store::{Store, Version};
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Id, Out};
use stateright::{Rewrite, RewritePlan};
use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::marker::PhantomData;
use std::ops::Range;
use std::time::Duration;

/// The most client requests the master holds while a two-phase update is undecided; beyond
/// it a request is ignored and its client's retry brings it back.
pub const QUEUE_MAX: usize = 1024;

/// The most two-phase requests that share one prepare/commit round (group commit).
pub const GROUP_MAX: usize = 64;

/// The undecided two-phase round (at most one at a time): one request, or a group of
/// requests that waited for the previous round and now share one version, one Prepare, one
/// vote per slave and one Commit/Abort (group commit).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Pending<S: Store> {
    /// The requests of the round, oldest first (never empty).
    pub members: Vec<Queued<S>>,
    /// The reserved version and the delta of every member's change, composed in order.
    pub step: Step<S>,
}

impl<S: Store> Pending<S> {
    /// Whether request `req` of `client` is in this round.
    pub fn has(&self, client: Id, req: u64) -> bool {
        self.members
            .iter()
            .any(|m| m.client == client && m.req == req)
    }
}

/// A client request; waiting for the undecided two-phase round to be decided, or a member
/// of it.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Queued<S: Store> {
    /// The client.
    pub client: Id,
    /// Its request number.
    pub req: u64,
    /// The change.
    pub op: S::Op,
    /// One-phase or two-phase.
    pub mode: Mode,
}

/// What the master saves, before any message that reveals it leaves (SPEC "Durability").
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct MasterStorage<S: Store> {
    /// The master user layer: data, version counter, client ledger (not the delta history,
    /// a volatile cache).
    pub user: MasterUser<S>,
    /// The undecided two-phase update, saved before its Prepare leaves.
    pub pending: Option<Pending<S>>,
    /// The last decision, saved before its Commit/Abort leaves.
    pub last_decision: Option<Decision>,
}

/// A master rebuilding its state from its slaves after its store was lost or found
/// damaged (issue 18; [`Saved::MasterLost`]). It serves nothing until every slave has
/// reported: only then does it know the most advanced committed copy (a slave that has not
/// reported may hold a later one) and every version any slave has heard of.
#[derive(Clone, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Recovery<S: Store> {
    /// The slaves that reported.
    pub reported: BTreeSet<Id>,
    /// The most advanced committed version reported.
    pub version: Version,
    /// The committed data at `version`, from the slave that reported it.
    pub data: S,
    /// The highest version any report names.
    pub seen: Version,
}

/// The master server's state.
///
/// # Invariants
/// - At most one two-phase round is undecided (`pending`); later requests wait in `queue`.
/// - `votes ⊆ slaves` and only counts votes for `pending`'s version.
/// - `acked` only holds slaves that acknowledged the current [`Beat`]; the heartbeat timer is
///   set exactly while some slave has not.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct MasterState<S: Store> {
    /// The master user layer (MU).
    pub user: MasterUser<S>,
    /// The undecided two-phase update.
    pub pending: Option<Pending<S>>,
    /// Slaves that voted Prepared for `pending`.
    pub votes: BTreeSet<Id>,
    /// The last two-phase decision.
    pub last_decision: Option<Decision>,
    /// Slaves that acknowledged the current beat.
    pub acked: BTreeSet<Id>,
    /// Requests waiting for `pending`'s decision, oldest first. Volatile: after a master
    /// restart their clients' retries bring them back.
    pub queue: VecDeque<Queued<S>>,
    /// Set while the master rebuilds a lost store from its slaves ([`Recovery`]).
    pub recovery: Option<Recovery<S>>,
}

impl<S: Store> MasterState<S> {
    /// What the heartbeat currently carries.
    pub fn beat(&self) -> Beat {
        Beat {
            version: self.user.version,
            decision: self.last_decision,
        }
    }

    /// The saved state. The delta history is a volatile cache: saving it would cost a
    /// write per remembered step; after a restart, slaves that are behind get a snapshot.
    fn storage(&self) -> Saved<S> {
        // Everything but the history, without copying the history first.
        let user = MasterUser {
            data: self.user.data.clone(),
            version: self.user.version,
            next_version: self.user.next_version,
            history: VecDeque::new(),
            clients: self.user.clients.clone(),
        };
        Saved::Master(MasterStorage {
            user,
            pending: self.pending.clone(),
            last_decision: self.last_decision,
        })
    }
}

impl<S: Store> Rewrite<Id> for MasterState<S> {
    fn rewrite<P>(&self, plan: &RewritePlan<Id, P>) -> Self {
        let mut s = self.clone();
        s.votes = self.votes.iter().map(|id| plan.rewrite(id)).collect();
        s.acked = self.acked.iter().map(|id| plan.rewrite(id)).collect();
        if let (Some(r), Some(mine)) = (&mut s.recovery, &self.recovery) {
            r.reported = mine.reported.iter().map(|id| plan.rewrite(id)).collect();
        }
        s
    }
}

/// The master server actor.
#[derive(Clone, Debug)]
pub struct MasterServer<S: Store> {
    /// The participants: every configured slave (static membership).
    pub slaves: Vec<Id>,
    /// How many committed steps MU remembers for deltas; older versions get a snapshot.
    pub history_bound: usize,
    /// How often to re-send the beat to slaves that have not acknowledged it.
    pub heartbeat: Range<Duration>,
    /// A deliberate bug, for showing that the checker catches it.
    pub mutant: Option<Mutant>,
    /// The store type.
    pub store: PhantomData<S>,
}

impl<S: Store> MasterServer<S> {
    fn is(&self, mutant: Mutant) -> bool {
        self.mutant == Some(mutant)
    }

    /// Broadcasts one message to every slave (claims 10, 20, 23, 38: the runtime encodes it
    /// once and writes it to every link).
    fn multicast(&self, o: &mut Out<Self>, msg: ServiceMsg<S>) {
        o.broadcast(&self.slaves, &Msg::Service(msg));
    }

    /// The beat changed: every slave must acknowledge it anew.
    fn rearm_heartbeat(&self, state: &mut MasterState<S>, o: &mut Out<Self>) {
        state.acked.clear();
        o.set_timer(Timer::Heartbeat, self.heartbeat.clone());
    }

    /// Takes a new client request: one-phase commits at once, two-phase starts a vote.
    fn start(&self, state: &mut MasterState<S>, o: &mut Out<Self>, q: Queued<S>) {
        let entry = state.user.clients.entry(q.client).or_default();
        entry.next_req = q.req + 1;
        entry.last_reply = None;
        match q.mode {
            Mode::OnePhase => {
                let mut step = state.user.begin(&q.op);
                if self.is(Mutant::AckWithoutApplying) {
                    step.delta = S::empty_delta();
                }
                // One-phase (claims 1, 36, 45, 46): MU applies the change and MS announces it
                // to every slave concurrently. Saved before anything reveals it.
                let (prior, new) = (step.prior, step.new);
                let delta = step.delta.clone();
                state.user.commit(step, self.history_bound);
                let reply = ClientMsg::Committed {
                    req: q.req,
                    version: new,
                };
                state.user.clients.entry(q.client).or_default().last_reply = Some(reply.clone());
                if !self.is(Mutant::AnnounceBeforeSave) {
                    o.save(state.storage());
                }
                self.multicast(
                    o,
                    ServiceMsg::Announce {
                        prior,
                        new,
                        delta: Some(delta),
                    },
                );
                o.send(q.client, Msg::Client(reply));
                self.rearm_heartbeat(state, o);
            }
            Mode::TwoPhase { timeout_ms } => {
                // Group commit: the two-phase requests that queued behind the last round
                // join this one, in order, up to GROUP_MAX. They share its version (one new
                // state of the original copy), its Prepare, votes and decision.
                let mut members = vec![q];
                while members.len() < GROUP_MAX
                    && state
                        .queue
                        .front()
                        .is_some_and(|n| matches!(n.mode, Mode::TwoPhase { .. }))
                {
                    let n = state.queue.pop_front().expect("a front entry");
                    let entry = state.user.clients.entry(n.client).or_default();
                    entry.next_req = n.req + 1;
                    entry.last_reply = None;
                    members.push(n);
                }
                let joined = if self.is(Mutant::GroupLosesMember) {
                    1
                } else {
                    members.len()
                };
                let step = state
                    .user
                    .begin_all(members.iter().take(joined).map(|m| &m.op));
                // Two-phase (claims 6, 28, 47a): reserve the version, save it, then ask every
                // participant to prepare, and wait at most `timeout_ms` (the oldest member's)
                // for the votes.
                let prepare = ServiceMsg::Prepare {
                    prior: step.prior,
                    new: step.new,
                    delta: step.delta.clone(),
                };
                state.pending = Some(Pending { members, step });
                state.votes.clear();
                o.save(state.storage());
                self.multicast(o, prepare);
                o.set_timer(
                    Timer::Decision,
                    Duration::from_millis(timeout_ms)..Duration::from_millis(timeout_ms),
                );
            }
        }
    }

    /// Decides the pending round (claims 18, 21), saves the decision, then tells every slave
    /// and every member's client. Then takes queued requests.
    /// `abort` is `None` to commit, or why the round is aborted. A rollback (claim 5) names
    /// the one member withdrawn: the round aborts, that client is told, and the other members
    /// go back to the front of the queue, untold, to be proposed again under a new version.
    fn decide(
        &self,
        state: &mut MasterState<S>,
        o: &mut Out<Self>,
        abort: Option<AbortReason>,
        rolled_back: Option<(Id, u64)>,
    ) {
        let Some(pending) = state.pending.take() else {
            return;
        };
        let version = pending.step.new;
        let outcome = if abort.is_some() {
            Outcome::Abort
        } else {
            Outcome::Commit
        };
        state.votes.clear();
        state.last_decision = Some(Decision { version, outcome });
        let (to_slaves, reply): (_, &dyn Fn(u64) -> ClientMsg<S>) = match abort {
            None => {
                state.user.commit(pending.step, self.history_bound);
                (ServiceMsg::Commit { version }, &move |req| {
                    ClientMsg::Committed { req, version }
                })
            }
            Some(reason) => {
                // MU returns to the prior state: the data was never changed.
                state
                    .user
                    .abort(&pending.step, self.is(Mutant::ReuseAbortedVersion));
                (ServiceMsg::Abort { version }, &move |req| {
                    ClientMsg::Aborted {
                        req,
                        version,
                        reason,
                    }
                })
            }
        };
        let mut told = Vec::with_capacity(pending.members.len());
        for m in pending.members.into_iter().rev() {
            if rolled_back.is_some_and(|r| r != (m.client, m.req)) {
                // Withdrawn with the group, not by its client: proposed again. Until then it
                // is not taken, so a retry after a master restart (the queue is volatile)
                // starts it anew.
                let entry = state.user.clients.entry(m.client).or_default();
                entry.next_req = m.req;
                entry.last_reply = None;
                state.queue.push_front(m);
                continue;
            }
            let msg = reply(m.req);
            state.user.clients.entry(m.client).or_default().last_reply = Some(msg.clone());
            told.push((m.client, msg));
        }
        if !self.is(Mutant::ForgetDecisionOnCrash) {
            o.save(state.storage());
        }
        o.cancel_timer(Timer::Decision);
        self.multicast(o, to_slaves);
        for (client, msg) in told.into_iter().rev() {
            o.send(client, Msg::Client(msg));
        }
        self.rearm_heartbeat(state, o);
        self.drain_queue(state, o);
    }

    /// Takes queued requests in order until one starts a new two-phase update.
    fn drain_queue(&self, state: &mut MasterState<S>, o: &mut Out<Self>) {
        while state.pending.is_none() {
            let Some(q) = state.queue.pop_front() else {
                return;
            };
            self.start(state, o, q);
        }
    }

    fn on_client(
        &self,
        state: &mut Cow<MasterState<S>>,
        src: Id,
        msg: ClientMsg<S>,
        o: &mut Out<Self>,
    ) {
        let entry = state.user.clients.get(&src).cloned().unwrap_or_default();
        match msg {
            ClientMsg::Update { req, op, mode } => {
                if req + 1 == entry.next_req {
                    // A retry of the last request: answer again once decided; never apply twice.
                    if let Some(reply) = entry.last_reply {
                        o.send(src, Msg::Client(reply));
                    }
                } else if req < entry.next_req {
                    // Older than the last request: its client has moved on. Ignore.
                } else if state.pending.is_some() {
                    // Later updates wait for the undecided one (SPEC "Ordering").
                    let queued = state.queue.iter().any(|q| q.client == src && q.req == req);
                    if !queued && state.queue.len() < QUEUE_MAX {
                        state.to_mut().queue.push_back(Queued {
                            client: src,
                            req,
                            op,
                            mode,
                        });
                    }
                } else {
                    self.start(
                        state.to_mut(),
                        o,
                        Queued {
                            client: src,
                            req,
                            op,
                            mode,
                        },
                    );
                }
            }
            ClientMsg::Rollback { req } => {
                let undecided = state.pending.as_ref().is_some_and(|p| p.has(src, req));
                if undecided {
                    // Claim 5: the client withdraws the change before it is decided.
                    self.decide(
                        state.to_mut(),
                        o,
                        Some(AbortReason::RolledBack),
                        Some((src, req)),
                    );
                } else if req + 1 == entry.next_req {
                    // Too late to roll back, or already aborted: tell the client the outcome.
                    if let Some(reply) = entry.last_reply {
                        o.send(src, Msg::Client(reply));
                    }
                }
                // Otherwise the update has not arrived yet (reordered); the client retries.
            }
            // Replies travel from the master, never to it.
            ClientMsg::Committed { .. } | ClientMsg::Aborted { .. } => {}
        }
    }

    /// A slave's report to a master rebuilding its store (issue 18): once every slave has
    /// reported, the master takes the most advanced committed copy, and its counter moves
    /// past every version any slave has heard of, so no version is handed out twice
    /// (claims 9, 37, 43). A version above the copy that a slave heard of was never
    /// committed (its copy would hold it), so it is decided aborted, which tells every
    /// slave holding it prepared to drop it. The ledger is gone with the store.
    fn on_report(
        &self,
        state: &mut Cow<MasterState<S>>,
        src: Id,
        version: Version,
        data: S,
        seen: Version,
        o: &mut Out<Self>,
    ) {
        let fresh = state
            .recovery
            .as_ref()
            .is_some_and(|r| !r.reported.contains(&src));
        if !fresh || !self.slaves.contains(&src) {
            return;
        }
        let state = state.to_mut();
        let r = state.recovery.as_mut().expect("recovering");
        r.reported.insert(src);
        if version > r.version {
            r.version = version;
            r.data = data;
        }
        r.seen = r.seen.max(seen).max(version);
        let all = r.reported.len() == self.slaves.len();
        if !all && !self.is(Mutant::RecoverFromOneSlave) {
            return;
        }
        let r = state.recovery.take().expect("recovering");
        state.user.data = r.data;
        state.user.version = r.version;
        state.user.next_version = if self.is(Mutant::RecoverCounterFromCopy) {
            r.version + 1
        } else {
            r.seen + 1
        };
        state.last_decision = (r.seen > r.version).then_some(Decision {
            version: r.seen,
            outcome: Outcome::Abort,
        });
        o.save(state.storage());
        self.rearm_heartbeat(state, o);
    }

    fn on_service(
        &self,
        state: &mut Cow<MasterState<S>>,
        src: Id,
        msg: ServiceMsg<S>,
        o: &mut Out<Self>,
    ) {
        match msg {
            ServiceMsg::Report {
                version,
                data,
                seen,
            } => self.on_report(state, src, version, data, seen, o),
            ServiceMsg::DeltaRequest { from } => {
                // Claims 17, 36d: MS asks MU for what the slave misses and sends it.
                match state.user.catch_up(from) {
                    Some(CatchUp::Delta(delta)) => o.send(
                        src,
                        Msg::Service(ServiceMsg::Delta {
                            from,
                            to: state.user.version,
                            delta,
                        }),
                    ),
                    Some(CatchUp::Snapshot(data)) => o.send(
                        src,
                        Msg::Service(ServiceMsg::Snapshot {
                            from,
                            to: state.user.version,
                            data,
                        }),
                    ),
                    // The slave is not behind (a stale request): nothing to send.
                    None => {}
                }
            }
            ServiceMsg::Prepared { version } => {
                let current = state
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.step.new == version);
                // A vote for an update already decided, or a repeated vote, changes nothing.
                if current && self.slaves.contains(&src) && !state.votes.contains(&src) {
                    let state = state.to_mut();
                    state.votes.insert(src);
                    let enough = if self.is(Mutant::CommitOnMajority) {
                        2 * state.votes.len() > self.slaves.len()
                    } else {
                        // Claims 1, 18: commit only once every participant voted Prepared.
                        state.votes.len() == self.slaves.len()
                    };
                    if enough {
                        self.decide(state, o, None, None);
                    }
                }
            }
            ServiceMsg::Refused { version } => {
                if state
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.step.new == version)
                {
                    self.decide(state.to_mut(), o, Some(AbortReason::Refused), None);
                }
                // A refusal of a decided update is stale.
            }
            ServiceMsg::HeartbeatAck(beat) => {
                // Only an acknowledgement of the current beat counts; older ones are stale.
                if beat == state.beat() && !state.acked.contains(&src) && self.slaves.contains(&src)
                {
                    let state = state.to_mut();
                    state.acked.insert(src);
                    if state.acked.len() == self.slaves.len() {
                        // Nothing left to repair: the heartbeat stops (so a converged system
                        // is quiescent, and a stuck one is visible to the checker).
                        o.cancel_timer(Timer::Heartbeat);
                    }
                }
            }
            // Master-to-slave messages never arrive at the master (only by a stray sender).
            ServiceMsg::Announce { .. }
            | ServiceMsg::Delta { .. }
            | ServiceMsg::Snapshot { .. }
            | ServiceMsg::Prepare { .. }
            | ServiceMsg::Commit { .. }
            | ServiceMsg::Abort { .. }
            | ServiceMsg::Heartbeat(_)
            | ServiceMsg::Recover => {}
        }
    }
}

impl<S: Store> Actor for MasterServer<S> {
    type Msg = Msg<S>;
    type State = MasterState<S>;
    type Timer = Timer;
    type Storage = Saved<S>;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        let mut state = MasterState {
            user: MasterUser::new(),
            pending: None,
            votes: BTreeSet::new(),
            last_decision: None,
            acked: BTreeSet::new(),
            queue: VecDeque::new(),
            recovery: None,
        };
        if let Some(Saved::MasterLost) = storage {
            // The store was lost or found damaged (issue 18): rebuild from the slaves before
            // serving. The marker is saved first, so a crash meanwhile rebuilds again rather
            // than start a fresh cluster at version 0.
            state.recovery = Some(Recovery::default());
            o.save(Saved::MasterLost);
            self.multicast(o, ServiceMsg::Recover);
            o.set_timer(Timer::Heartbeat, self.heartbeat.clone());
        } else if let Some(Saved::Master(saved)) = storage {
            state.user = saved.user.clone();
            state.pending = saved.pending.clone();
            state.last_decision = saved.last_decision;
            // Votes were volatile: an update left undecided by the crash is presumed aborted,
            // and the decision is saved and heartbeated like any other.
            self.decide(&mut state, o, Some(AbortReason::MasterRestarted), None);
            // Slaves may have missed anything while the master was down: heartbeat until each
            // acknowledges.
            self.rearm_heartbeat(&mut state, o);
        }
        state
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
            // A master rebuilding its store serves nothing and hears nothing but reports:
            // clients retry, and slaves are heartbeated once it is done.
            Msg::Service(msg @ ServiceMsg::Report { .. }) => self.on_service(state, src, msg, o),
            _ if state.recovery.is_some() => {}
            Msg::Client(msg) => self.on_client(state, src, msg, o),
            Msg::Service(msg) => self.on_service(state, src, msg, o),
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        match timer {
            Timer::Heartbeat if state.recovery.is_some() => {
                let reported = &state.recovery.as_ref().expect("recovering").reported;
                for slave in &self.slaves {
                    if !reported.contains(slave) {
                        o.send(*slave, Msg::Service(ServiceMsg::Recover));
                    }
                }
                o.set_timer(Timer::Heartbeat, self.heartbeat.clone());
            }
            Timer::Heartbeat => {
                let beat = state.beat();
                for slave in &self.slaves {
                    if !state.acked.contains(slave) {
                        o.send(*slave, Msg::Service(ServiceMsg::Heartbeat(beat)));
                    }
                }
                if !self.is(Mutant::HeartbeatOnce) {
                    o.set_timer(Timer::Heartbeat, self.heartbeat.clone());
                }
            }
            Timer::Decision => {
                // Claim 6: not every vote arrived in time.
                if state.pending.is_some() {
                    self.decide(state.to_mut(), o, Some(AbortReason::TimedOut), None);
                }
            }
            // Client timers never run on the master.
            Timer::Retry => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KvOp, ModelKv};

    fn master() -> MasterServer<ModelKv> {
        MasterServer {
            slaves: vec![Id::from(1), Id::from(2)],
            history_bound: 4,
            heartbeat: Duration::ZERO..Duration::ZERO,
            mutant: None,
            store: PhantomData,
        }
    }

    fn deliver(
        m: &MasterServer<ModelKv>,
        state: MasterState<ModelKv>,
        src: usize,
        msg: Msg<ModelKv>,
    ) -> (MasterState<ModelKv>, Vec<String>) {
        let mut cow = Cow::Owned(state);
        let mut out = Out::new();
        m.on_msg(Id::from(0), &mut cow, Id::from(src), msg, &mut out);
        (
            cow.into_owned(),
            out.iter().map(|c| format!("{c:?}")).collect(),
        )
    }

    fn update(req: u64, mode: Mode) -> Msg<ModelKv> {
        Msg::Client(ClientMsg::Update {
            req,
            op: KvOp::Put(0, 5),
            mode,
        })
    }

    #[test]
    fn one_phase_saves_then_announces_then_replies() {
        let m = master();
        let state = m.on_start(Id::from(0), &None, &mut Out::new());
        let (state, cmds) = deliver(&m, state, 3, update(0, Mode::OnePhase));
        assert_eq!(state.user.version, 1);
        assert!(cmds[0].starts_with("Save(Master("), "{cmds:?}");
        assert!(cmds[1].starts_with("Send(Id(1), Service(Announce { prior: 0, new: 1"));
        assert!(cmds[2].starts_with("Send(Id(2), Service(Announce { prior: 0, new: 1"));
        assert_eq!(
            cmds[3],
            "Send(Id(3), Client(Committed { req: 0, version: 1 }))"
        );
        assert_eq!(cmds[4], "SetTimer(Heartbeat, 0ns..0ns)");
    }

    #[test]
    fn two_phase_commits_only_after_every_vote_and_a_retry_is_not_applied_twice() {
        let m = master();
        let state = m.on_start(Id::from(0), &None, &mut Out::new());
        let mode = Mode::TwoPhase { timeout_ms: 50 };
        let (state, cmds) = deliver(&m, state, 3, update(0, mode));
        assert!(cmds[0].starts_with("Save(Master("));
        assert!(state.pending.is_some());
        let (state, cmds) = deliver(
            &m,
            state,
            1,
            Msg::Service(ServiceMsg::Prepared { version: 1 }),
        );
        assert!(
            cmds.is_empty() && state.pending.is_some(),
            "one vote of two is not enough"
        );
        let (state, cmds) = deliver(
            &m,
            state,
            2,
            Msg::Service(ServiceMsg::Prepared { version: 1 }),
        );
        assert!(state.pending.is_none());
        assert_eq!(
            state.last_decision,
            Some(Decision {
                version: 1,
                outcome: Outcome::Commit
            })
        );
        assert!(
            cmds[0].starts_with("Save(Master("),
            "the decision is saved before it is sent"
        );
        assert!(
            cmds.iter()
                .any(|c| c == "Send(Id(1), Service(Commit { version: 1 }))")
        );
        let (again, cmds) = deliver(&m, state.clone(), 3, update(0, mode));
        assert_eq!(again, state);
        assert_eq!(
            cmds,
            vec!["Send(Id(3), Client(Committed { req: 0, version: 1 }))".to_string()]
        );
    }

    fn vote_all(
        m: &MasterServer<ModelKv>,
        mut state: MasterState<ModelKv>,
        version: u64,
    ) -> (MasterState<ModelKv>, Vec<String>) {
        let mut cmds = Vec::new();
        for slave in [1, 2] {
            let (s, c) = deliver(
                m,
                state,
                slave,
                Msg::Service(ServiceMsg::Prepared { version }),
            );
            state = s;
            cmds = c;
        }
        (state, cmds)
    }

    /// Clients 3, 4 and 5 each ask for a two-phase put of key `c` (value `10 c`); client 3's
    /// round (v1) is voted and decided. Returns the state and that last step's commands.
    fn first_round_decided(m: &MasterServer<ModelKv>) -> (MasterState<ModelKv>, Vec<String>) {
        let mut state = m.on_start(Id::from(0), &None, &mut Out::new());
        for client in [3u8, 4, 5] {
            let put = Msg::Client(ClientMsg::Update {
                req: 0,
                op: KvOp::Put(client, 10 * client),
                mode: Mode::TwoPhase { timeout_ms: 50 },
            });
            state = deliver(m, state, usize::from(client), put).0;
        }
        assert_eq!(state.queue.len(), 2, "later requests wait for the round");
        vote_all(m, state, 1)
    }

    #[test]
    fn requests_queued_behind_a_round_share_the_next_one() {
        let m = master();
        let (state, cmds) = first_round_decided(&m);
        // v1 decided, then clients 4 and 5 share v2: one Prepare, one vote per slave.
        let group = state.pending.as_ref().expect("a new round");
        assert_eq!(group.members.len(), 2);
        assert_eq!(group.step.new, 2);
        let prepares = cmds
            .iter()
            .filter(|c| c.contains("Prepare { prior: 1, new: 2"))
            .count();
        assert_eq!(
            prepares, 2,
            "one Prepare per slave for the whole group: {cmds:?}"
        );
        let (state, cmds) = vote_all(&m, state, 2);
        for client in [4, 5] {
            let told = format!("Send(Id({client}), Client(Committed {{ req: 0, version: 2 }}))");
            assert!(cmds.contains(&told), "{told} in {cmds:?}");
        }
        assert!(state.pending.is_none() && state.queue.is_empty());
        assert_eq!(state.user.version, 2);
        for client in [3u8, 4, 5] {
            assert_eq!(state.user.data.read(&client), Some(&(10 * client)));
        }
    }

    #[test]
    fn a_rollback_in_a_group_sends_the_other_members_back_to_the_queue() {
        let m = master();
        let (state, _) = first_round_decided(&m);
        let (state, cmds) = deliver(&m, state, 4, Msg::Client(ClientMsg::Rollback { req: 0 }));
        assert!(cmds.contains(&"Send(Id(1), Service(Abort { version: 2 }))".to_string()));
        assert!(cmds.iter().any(|c| {
            c.starts_with("Send(Id(4), Client(Aborted { req: 0, version: 2, reason: RolledBack")
        }));
        assert!(
            !cmds.iter().any(|c| c.starts_with("Send(Id(5)")),
            "client 5 is not told: {cmds:?}"
        );
        // Client 5's request is proposed again, alone, under a fresh version.
        let pending = state.pending.as_ref().expect("re-proposed");
        assert_eq!(pending.step.new, 3);
        assert!(pending.has(Id::from(5), 0) && pending.members.len() == 1);
        let (_, cmds) = vote_all(&m, state, 3);
        assert!(
            cmds.contains(&"Send(Id(5), Client(Committed { req: 0, version: 3 }))".to_string())
        );
    }

    #[test]
    fn a_lost_store_is_rebuilt_from_every_slave_before_the_master_serves() {
        let m = master();
        let mut out = Out::new();
        let state = m.on_start(Id::from(0), &Some(Saved::MasterLost), &mut out);
        let cmds: Vec<String> = out.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(
            cmds,
            vec![
                "Save(MasterLost)",
                "Send(Id(1), Service(Recover))",
                "Send(Id(2), Service(Recover))",
                "SetTimer(Heartbeat, 0ns..0ns)",
            ],
            "the marker is saved before anything leaves"
        );
        // Rebuilding, it serves no client.
        let (state, cmds) = deliver(&m, state, 3, update(0, Mode::OnePhase));
        assert!(cmds.is_empty() && state.user.version == 0, "{cmds:?}");
        let mut data = ModelKv::default();
        data.apply(&data.delta_of(&KvOp::Put(0, 7)));
        let report = |version, seen| {
            Msg::Service(ServiceMsg::Report {
                version,
                data: if version == 3 {
                    data.clone()
                } else {
                    ModelKv::default()
                },
                seen,
            })
        };
        // One slave of two is not enough: the other may hold a later copy.
        let (state, cmds) = deliver(&m, state, 1, report(3, 4));
        assert!(cmds.is_empty() && state.recovery.is_some(), "{cmds:?}");
        let (state, cmds) = deliver(&m, state, 2, report(0, 2));
        assert!(state.recovery.is_none());
        assert_eq!((state.user.version, state.user.next_version), (3, 5));
        assert_eq!(state.user.data, data, "the most advanced copy");
        assert_eq!(
            state.last_decision,
            Some(Decision {
                version: 4,
                outcome: Outcome::Abort
            }),
            "a version heard of above the copy was never committed"
        );
        assert!(cmds[0].starts_with("Save(Master("), "{cmds:?}");
        assert_eq!(cmds[1], "SetTimer(Heartbeat, 0ns..0ns)");
        // Serving again: the next update takes a version past every one heard of.
        let (state, _) = deliver(&m, state, 3, update(0, Mode::OnePhase));
        assert_eq!(state.user.version, 5);
    }

    #[test]
    fn restart_aborts_an_undecided_update_and_never_reuses_its_version() {
        let m = master();
        let state = m.on_start(Id::from(0), &None, &mut Out::new());
        let mut cow = Cow::Owned(state);
        let mut out = Out::new();
        m.on_msg(
            Id::from(0),
            &mut cow,
            Id::from(3),
            update(0, Mode::TwoPhase { timeout_ms: 50 }),
            &mut out,
        );
        let saved = out.iter().find_map(|c| match c {
            stateright::actor::Command::Save(s) => Some(s.clone()),
            _ => None,
        });
        let mut out = Out::new();
        let restarted = m.on_start(Id::from(0), &saved, &mut out);
        assert_eq!(
            restarted.last_decision,
            Some(Decision {
                version: 1,
                outcome: Outcome::Abort
            })
        );
        assert_eq!(restarted.user.next_version, 2);
        assert_eq!(restarted.user.version, 0);
    }
}
