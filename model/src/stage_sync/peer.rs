//! A peer of protocol 4 (seed 003): executes its user's operations at once, broadcasts each,
//! and agrees with the other peers on one order of operations by execution stage and
//! priority.
//!
//! ```text
//!   user input ─▶ execute at stage L+1 ─▶ Sync{current, previous, priority} ─▶ every peer
//!   Sync received:
//!     stage L+1, previous = last executed ─────────────▶ execute           (claim 9)
//!     a later stage, or another previous ──────────────▶ waiting list      (claim 10)
//!       a lower-priority message of the same stage pair leaves it for the redo queue (11)
//!     stage ≤ L, previous matches, beats the journaled
//!       operation at that stage ─▶ undo it and all after it into the redo queue,
//!                                  execute the incoming one                (claims 12-14)
//!     stage ≤ L, loses ────────────────────────────────▶ waiting list      (claim 15)
//!   then, until nothing changes: execute whatever held message now fits; execute this
//!   peer's own undone operations again at the end of the journal, and broadcast them.
//! ```
//!
//! Every rule is written once, at the function that implements it.

use super::document::{Document, Edit, Undo};
use super::msg::{
    CHAIN_START, Current, OpId, PeerId, Previous, Priority, Report, StageMsg, Sync, Timer, chain,
};
use super::{Mutant, Ordering};
use crate::store::Payload;
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Id, Out};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One executed operation in a journal (claim 12: "a journal of operations executed").
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Entry<V: Payload> {
    /// The message it was executed from (its stage is the entry's position).
    pub sync: Sync<V>,
    /// How to take it back.
    pub undo: Undo<V>,
    /// The chain value of the journal up to and including this entry.
    pub chain: u64,
}

/// The truncated part of a journal: every stage up to the stability line, folded into a
/// document. Nothing at or below it can be undone any more.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Base<V: Payload> {
    /// The last truncated stage (0: none).
    pub stage: u32,
    /// The chain value at `stage`.
    pub chain: u64,
    /// The operation at `stage`.
    pub last: Option<OpId>,
    /// Per origin, its highest operation truncated. An origin's operations keep their order
    /// in every journal (it re-executes undone ones in order), so every operation of that
    /// origin up to it is truncated.
    pub done: BTreeMap<PeerId, u32>,
    /// The document at `stage`.
    pub doc: Document<V>,
}

impl<V: Payload> Default for Base<V> {
    fn default() -> Self {
        Base {
            stage: 0,
            chain: CHAIN_START,
            last: None,
            done: BTreeMap::new(),
            doc: Document::default(),
        }
    }
}

/// A peer's state, all of it saved after every step that changes it.
///
/// The seed's local state (claim 9) is here: the current stage is [`PeerState::stage`], the
/// last executed operation [`PeerState::op_at`] of it.
///
/// # Invariants
/// - `doc` is `base.doc` with the journal's edits executed in order
///   ([`super::model::props::data_is_replay`]).
/// - Each journal entry's previous operation is the entry before it
///   ([`super::model::props::journals_chained`]).
/// - Every operation appears at most once across the truncated base, journal, waiting list
///   and redo queue ([`super::model::props::at_most_once`]); none received is ever dropped
///   ([`super::model::props::none_lost`]).
/// - The peer's own operations are always in its journal or base between steps: it executes
///   its undone ones again in the same step.
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct PeerState<V: Payload> {
    /// The data: the document after every executed operation.
    pub doc: Document<V>,
    /// The truncated part of the journal.
    pub base: Base<V>,
    /// The executed operations above the base, in stage order: entry `i` is at stage
    /// `base.stage + 1 + i`.
    pub journal: Vec<Entry<V>>,
    /// Messages held for a later stage or another previous operation, or that lost their
    /// stage (claims 10, 15): at most one per stage (claim 11).
    #[serde(with = "pairs")]
    pub waiting: BTreeMap<OpId, Sync<V>>,
    /// Undone operations waiting to be executed again (claim 14), and messages that left the
    /// waiting list for a higher-priority one of the same stage pair (claim 11). Between
    /// steps it holds other peers' operations only.
    #[serde(with = "pairs")]
    pub redo: BTreeMap<OpId, Sync<V>>,
    /// Operations this peer originated.
    pub issued: u32,
    /// The model's next scripted edit.
    pub next_edit: u32,
    /// The latest report of every other peer.
    pub reports: BTreeMap<PeerId, Report>,
    /// The last report this peer sent.
    pub report: Option<Report>,
}

/// A map keyed by a struct, serialized as a sequence of pairs: the same bytes in postcard
/// (a length, then the pairs), and encodable in formats whose map keys are strings (the
/// runtime's JSON traces).
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

impl<V: Payload> Default for PeerState<V> {
    fn default() -> Self {
        PeerState {
            doc: Document::default(),
            base: Base::default(),
            journal: Vec::new(),
            waiting: BTreeMap::new(),
            redo: BTreeMap::new(),
            issued: 0,
            next_edit: 0,
            reports: BTreeMap::new(),
            report: None,
        }
    }
}

impl<V: Payload> PeerState<V> {
    /// The current stage: how many operations are executed (the truncated ones included).
    pub fn stage(&self) -> u32 {
        self.base.stage + self.journal.len() as u32
    }

    /// The journal entry at `stage`, if it is above the base.
    pub fn entry_at(&self, stage: u32) -> Option<&Entry<V>> {
        let i = stage.checked_sub(self.base.stage + 1)?;
        self.journal.get(i as usize)
    }

    /// The operation executed at `stage`: `Some(None)` at stage 0 (nothing), `None` when the
    /// stage is truncated below the base's last or not reached.
    pub fn op_at(&self, stage: u32) -> Option<Option<OpId>> {
        if stage == 0 {
            return Some(None);
        }
        if stage == self.base.stage {
            return Some(self.base.last);
        }
        self.entry_at(stage).map(|e| Some(e.sync.current.id))
    }

    /// The chain value at `stage`, where it is known (the base's stage or above).
    pub fn chain_at(&self, stage: u32) -> Option<u64> {
        if stage == self.base.stage {
            return Some(self.base.chain);
        }
        self.entry_at(stage).map(|e| e.chain)
    }

    /// The previous operation parameter for an operation executed next.
    pub fn last_executed(&self) -> Option<Previous> {
        let stage = self.stage();
        self.op_at(stage).flatten().map(|id| Previous { id, stage })
    }

    /// Whether `id` is in the truncated base.
    pub fn done(&self, id: OpId) -> bool {
        self.base.done.get(&id.origin).is_some_and(|s| id.seq <= *s)
    }

    /// The attempt of `id` this peer holds, in its journal, waiting list or redo queue.
    pub fn attempt_held(&self, id: OpId) -> Option<u32> {
        self.waiting
            .get(&id)
            .or_else(|| self.redo.get(&id))
            .map(|s| s.current.attempt)
            .or_else(|| {
                self.journal
                    .iter()
                    .find(|e| e.sync.current.id == id)
                    .map(|e| e.sync.current.attempt)
            })
    }

    /// Whether the peer holds nothing back: its waiting list and redo queue are empty.
    pub fn settled(&self) -> bool {
        self.waiting.is_empty() && self.redo.is_empty()
    }

    /// The stage this peer has truncated its journal at: its stability line.
    pub fn stable(&self) -> u32 {
        self.base.stage
    }

    /// Its report of the current journal.
    fn report_now(&self, seq: u32) -> Report {
        Report {
            seq,
            base: self.base.stage,
            base_chain: self.base.chain,
            ops: self.journal.iter().map(|e| e.sync.current.id).collect(),
        }
    }
}

/// The peer actor: its configuration. The state is [`PeerState`].
#[derive(Clone, Debug)]
pub struct Peer<V: Payload> {
    /// How many peers there are: actors `0..peers`. Other ids are local users.
    pub peers: usize,
    /// The model's scripted user input, in order (the runtime leaves it empty and sends
    /// [`StageMsg::Edit`]).
    pub edits: Vec<Edit<V>>,
    /// The priority an operation carries.
    pub ordering: Ordering,
    /// Whether the peer reports its journal and truncates it at the stability line.
    pub stability: bool,
    /// Whether the peer re-sends its unstable operations on [`Timer::Resend`].
    pub resend: bool,
    /// Whether the peer saves its state (the model only when crashes are explored).
    pub save: bool,
    /// A deliberate bug.
    pub mutant: Option<Mutant>,
}

/// How often the model's user edits (the model ignores durations).
pub const EDIT_TICK: std::ops::Range<Duration> =
    Duration::from_millis(10)..Duration::from_millis(20);
/// How often a peer re-sends its unstable operations.
pub const RESEND_TICK: std::ops::Range<Duration> =
    Duration::from_millis(200)..Duration::from_millis(300);

/// The outcome of one step, for the runtime and the tests: what changed.
#[derive(Default)]
struct Step {
    /// Own operations executed in this step: their final message is broadcast at its end.
    executed_own: BTreeSet<OpId>,
}

impl<V: Payload> Peer<V> {
    fn is(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }

    fn me(id: Id) -> PeerId {
        usize::from(id) as PeerId
    }

    fn broadcast(&self, me: PeerId, msg: StageMsg<V>, o: &mut Out<Self>) {
        let to: Vec<Id> = (0..self.peers)
            .filter(|j| *j as PeerId != me)
            .map(Id::from)
            .collect();
        if !to.is_empty() {
            o.broadcast(&to, &msg);
        }
    }

    /// Claim 1: executes the user's edit as a new operation at the next stage. Its priority
    /// is the peer's, and under [`Ordering::Aged`] also its age: this stage.
    pub fn issue(
        &self,
        me: PeerId,
        st: &mut PeerState<V>,
        edit: Edit<V>,
        o: &mut Out<Self>,
    ) -> (OpId, u32) {
        st.issued += 1;
        let id = OpId {
            origin: me,
            seq: st.issued,
        };
        let stage = st.stage() + 1;
        let age = match self.ordering {
            Ordering::Fixed => 0,
            Ordering::Aged => stage,
        };
        let sync = Sync {
            current: Current {
                id,
                attempt: 1,
                edit,
                stage,
            },
            previous: st.last_executed(),
            priority: Priority { age, peer: me },
        };
        self.execute(st, sync);
        let mut step = Step::default();
        step.executed_own.insert(id);
        self.settle(me, st, &mut step);
        self.finish(me, st, step, o);
        (id, stage)
    }

    /// Receives a synchronization message (claims 7, 9-15). Returns whether the state changed.
    fn receive(
        &self,
        me: PeerId,
        src: Id,
        state: &mut Cow<PeerState<V>>,
        m: Sync<V>,
        o: &mut Out<Self>,
    ) {
        let id = m.current.id;
        if !m.well_formed() || id.origin == me || id.origin != Self::me(src) {
            // Malformed, or not from its origin (only an origin sends its operations): a
            // peer never takes it.
            return;
        }
        if state.done(id) {
            // Truncated here: executed for good, a late copy.
            return;
        }
        if state
            .attempt_held(id)
            .is_some_and(|a| a >= m.current.attempt)
        {
            // A copy of a message held, or an older execution of an operation whose newer
            // one is held: the network duplicates and reorders.
            return;
        }
        let st = state.to_mut();
        let mut step = Step::default();
        if !self.is(Mutant::KeepRetracted) && self.retract(me, st, &m, &mut step) {
            self.finish(me, st, step, o);
            return;
        }
        self.hold(st, m);
        self.settle(me, st, &mut step);
        self.finish(me, st, step, o);
    }

    /// A newer execution of an operation replaces the older one this peer holds: the held
    /// message is dropped, or the journaled operation is undone with everything after it
    /// (they go to the redo queue, claim 14), since its origin no longer has it there. When
    /// the newer one sits at the same stage after the same previous operation, it takes the
    /// entry's place and nothing is undone. Returns whether it took the entry's place.
    fn retract(&self, me: PeerId, st: &mut PeerState<V>, m: &Sync<V>, step: &mut Step) -> bool {
        let id = m.current.id;
        if st.waiting.remove(&id).is_some() || st.redo.remove(&id).is_some() {
            return false;
        }
        let Some(i) = st.journal.iter().position(|e| e.sync.current.id == id) else {
            return false;
        };
        let stage = st.base.stage + 1 + i as u32;
        if stage == m.current.stage && self.previous_matches(st, m) {
            st.journal[i].sync = m.clone();
            return true;
        }
        self.undo_from(me, st, stage, step);
        st.redo.remove(&id);
        false
    }

    /// Claims 10, 11 and 15: holds `m` in the waiting list. The waiting list keeps, per stage
    /// pair, the highest-priority message; a lower-priority one leaves it for the redo queue,
    /// where it still counts as held and executes when it fits (never dropped).
    fn hold(&self, st: &mut PeerState<V>, m: Sync<V>) {
        let rival = st
            .waiting
            .values()
            .find(|w| {
                w.current.stage == m.current.stage
                    && w.previous.map(|p| p.stage) == m.previous.map(|p| p.stage)
            })
            .cloned();
        let drop = self.is(Mutant::DropLowerPriority);
        match rival {
            Some(w) if w.beats(&m) => {
                if !drop {
                    st.redo.insert(m.current.id, m);
                }
            }
            Some(w) => {
                st.waiting.remove(&w.current.id);
                if !drop {
                    st.redo.insert(w.current.id, w);
                }
                st.waiting.insert(m.current.id, m);
            }
            None => {
                st.waiting.insert(m.current.id, m);
            }
        }
    }

    /// Claims 9 and 13: whether `m`'s previous operation is the one this peer executed at the
    /// stage before `m`'s.
    fn previous_matches(&self, st: &PeerState<V>, m: &Sync<V>) -> bool {
        st.op_at(m.current.stage - 1) == Some(m.previous.map(|p| p.id))
    }

    /// Whether the held message `m` executes now: at the next stage after the right previous
    /// operation (claim 9), or at a stage already executed, after the same previous operation
    /// (claim 13), over a journaled operation of lower priority (claim 12).
    fn fits(&self, st: &PeerState<V>, m: &Sync<V>) -> bool {
        let stage = m.current.stage;
        let next = st.stage() + 1;
        if stage <= st.base.stage || stage > next {
            return false;
        }
        if stage == next {
            return self.is(Mutant::SkipPreviousCheck) || self.previous_matches(st, m);
        }
        let Some(journaled) = st.entry_at(stage) else {
            return false;
        };
        self.previous_matches(st, m) && (self.is(Mutant::IncomingWins) || m.beats(&journaled.sync))
    }

    /// Executes every held message that fits, lowest stage first and, at one stage, the
    /// highest priority first, undoing what it beats; then executes this peer's own undone
    /// operations again at the end of the journal (claim 14); until nothing changes.
    fn settle(&self, me: PeerId, st: &mut PeerState<V>, step: &mut Step) {
        loop {
            let best = st
                .waiting
                .values()
                .chain(st.redo.values())
                .filter(|m| m.current.id.origin != me && self.fits(st, m))
                .max_by_key(|m| {
                    (
                        std::cmp::Reverse(m.current.stage),
                        m.priority.rank(m.current.id),
                    )
                })
                .cloned();
            if let Some(m) = best {
                st.waiting.remove(&m.current.id);
                st.redo.remove(&m.current.id);
                if m.current.stage <= st.stage() {
                    self.undo_from(me, st, m.current.stage, step);
                }
                self.execute(st, m);
                continue;
            }
            if self.is(Mutant::NoRedo) {
                return;
            }
            let own: Vec<Sync<V>> = st
                .redo
                .values()
                .filter(|m| m.current.id.origin == me)
                .cloned()
                .collect();
            if own.is_empty() {
                return;
            }
            for m in own {
                st.redo.remove(&m.current.id);
                let again = Sync {
                    current: Current {
                        attempt: m.current.attempt + 1,
                        stage: st.stage() + 1,
                        ..m.current
                    },
                    previous: st.last_executed(),
                    priority: m.priority,
                };
                step.executed_own.insert(again.current.id);
                self.execute(st, again);
            }
        }
    }

    /// Claims 12 and 14: undoes the journaled operations from `stage` on, last first, and
    /// queues them for execution again.
    fn undo_from(&self, me: PeerId, st: &mut PeerState<V>, stage: u32, step: &mut Step) {
        assert!(
            stage > st.base.stage,
            "nothing at or below the base is undone"
        );
        while st.stage() >= stage {
            let Some(e) = st.journal.pop() else { break };
            if !self.is(Mutant::UndoKeepsData) {
                st.doc.undo(&e.undo);
            }
            if e.sync.current.id.origin == me {
                step.executed_own.remove(&e.sync.current.id);
            }
            st.redo.insert(e.sync.current.id, e.sync);
        }
    }

    /// Executes `m` at the next stage: its edit on the document, an entry in the journal.
    fn execute(&self, st: &mut PeerState<V>, m: Sync<V>) {
        let prev = st.chain_at(st.stage()).unwrap_or(CHAIN_START);
        let undo = st.doc.apply(&m.current.edit);
        let chain = chain(prev, m.current.id);
        st.journal.push(Entry {
            sync: m,
            undo,
            chain,
        });
    }

    /// Ends a step that changed the state: broadcasts the final message of every own
    /// operation executed in it, reports the journal if it changed and the peer holds
    /// nothing back, moves the stability line, saves.
    fn finish(&self, me: PeerId, st: &mut PeerState<V>, step: Step, o: &mut Out<Self>) {
        for e in &st.journal {
            if step.executed_own.contains(&e.sync.current.id) {
                self.broadcast(me, StageMsg::Sync(e.sync.clone()), o);
            }
        }
        if self.stability {
            let top = (st.stage(), st.chain_at(st.stage()));
            let reported = st
                .report
                .as_ref()
                .map(|r| (r.base + r.ops.len() as u32, r.chains().last().copied()));
            if st.settled() && reported != Some(top) && !(top.0 == 0 && reported.is_none()) {
                let seq = st.report.as_ref().map_or(1, |r| r.seq + 1);
                let r = st.report_now(seq);
                st.report = Some(r.clone());
                self.broadcast(me, StageMsg::Report(r), o);
            }
            self.stabilize(me, st);
        }
        if self.save {
            o.save(st.clone());
        }
    }

    /// Moves the stability line to the highest stage at which every other peer's latest
    /// report has the same journal as this peer, and truncates the journal there: every peer
    /// holds the same operations up to it and held nothing back when it reported.
    fn stabilize(&self, me: PeerId, st: &mut PeerState<V>) {
        let line = if self.is(Mutant::StableEarly) {
            if !st.settled() {
                return;
            }
            st.stage()
        } else {
            let mut line = st.stage();
            for j in (0..self.peers as PeerId).filter(|j| *j != me) {
                let Some(r) = st.reports.get(&j) else { return };
                match common(st, r) {
                    Some(s) => line = line.min(s),
                    None => return,
                }
            }
            line
        };
        while st.base.stage < line && !st.journal.is_empty() {
            let e = st.journal.remove(0);
            st.base.doc.apply(&e.sync.current.edit);
            st.base.stage += 1;
            st.base.chain = e.chain;
            let id = e.sync.current.id;
            st.base.last = Some(id);
            let done = st.base.done.entry(id.origin).or_insert(0);
            *done = (*done).max(id.seq);
        }
    }

    /// Timer [`Timer::Resend`]: the last message of each own operation above the base, and
    /// the last report.
    fn resend(&self, me: PeerId, st: &PeerState<V>, o: &mut Out<Self>) {
        for e in st.journal.iter().filter(|e| e.sync.current.id.origin == me) {
            self.broadcast(me, StageMsg::Sync(e.sync.clone()), o);
        }
        if let Some(r) = &st.report {
            self.broadcast(me, StageMsg::Report(r.clone()), o);
        }
    }
}

/// The highest stage at which `st`'s journal and the reported one have the same chain value,
/// among the stages both know.
fn common<V: Payload>(st: &PeerState<V>, r: &Report) -> Option<u32> {
    let chains = r.chains();
    let top = st.stage().min(r.base + r.ops.len() as u32);
    let bottom = st.base.stage.max(r.base);
    (bottom..=top)
        .rev()
        .find(|s| st.chain_at(*s) == chains.get((*s - r.base) as usize).copied())
}

impl<V: Payload> Actor for Peer<V> {
    type Msg = StageMsg<V>;
    type State = PeerState<V>;
    type Timer = Timer;
    type Storage = PeerState<V>;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        // A restart resumes from the last step (every changing step saves all of it).
        let st = storage.clone().unwrap_or_default();
        if (st.next_edit as usize) < self.edits.len() {
            o.set_timer(Timer::Edit, EDIT_TICK);
        }
        if self.resend {
            o.set_timer(Timer::Resend, RESEND_TICK);
        }
        st
    }

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        let me = Self::me(id);
        match msg {
            StageMsg::Sync(m) => self.receive(me, src, state, m, o),
            StageMsg::Report(r) => {
                let from = Self::me(src);
                if from == me
                    || from as usize >= self.peers
                    || state.reports.get(&from).is_some_and(|k| k.seq >= r.seq)
                {
                    // Our own, not a peer's, or an old copy: reports only move forward.
                    return;
                }
                let st = state.to_mut();
                st.reports.insert(from, r);
                self.finish(me, st, Step::default(), o);
            }
            StageMsg::Edit(edit) => {
                let (id, stage) = self.issue(me, state.to_mut(), edit, o);
                o.send(src, StageMsg::Edited { id, stage });
            }
            StageMsg::Show => {
                o.send(
                    src,
                    StageMsg::Document {
                        stage: state.stage(),
                        stable: state.stable(),
                        held: (state.waiting.len() + state.redo.len()) as u32,
                        items: state.doc.items.clone(),
                    },
                );
            }
            StageMsg::Edited { .. } | StageMsg::Document { .. } => {
                // Answers to a user; a peer asks nothing.
            }
        }
    }

    fn on_timeout(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        let me = Self::me(id);
        match timer {
            Timer::Edit => {
                let Some(edit) = self.edits.get(state.next_edit as usize).cloned() else {
                    return;
                };
                let st = state.to_mut();
                st.next_edit += 1;
                self.issue(me, st, edit, o);
                if (st.next_edit as usize) < self.edits.len() {
                    o.set_timer(Timer::Edit, EDIT_TICK);
                }
            }
            Timer::Resend => {
                self.resend(me, state, o);
                o.set_timer(Timer::Resend, RESEND_TICK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{self, Cmd, Cmds};

    type P = Peer<u8>;
    type M = StageMsg<u8>;

    /// A local user's id (above the peers).
    const USER: usize = 9;

    /// A peer as the runtime runs it: saving, reporting, re-sending.
    fn peer(peers: usize) -> P {
        Peer {
            peers,
            edits: vec![],
            ordering: Ordering::Aged,
            stability: true,
            resend: true,
            save: true,
            mutant: None,
        }
    }

    /// The same without reports, for the steps that are about ordering.
    fn quiet(peers: usize) -> P {
        Peer {
            stability: false,
            ..peer(peers)
        }
    }

    fn step(p: &P, me: usize, st: &mut PeerState<u8>, src: usize, m: M) -> Cmds<P> {
        harness::msg(p, Id::from(me), st, Id::from(src), m)
    }

    fn sync(
        origin: u64,
        seq: u32,
        attempt: u32,
        stage: u32,
        previous: Option<OpId>,
        value: u8,
    ) -> Sync<u8> {
        Sync {
            current: Current {
                id: OpId { origin, seq },
                attempt,
                edit: Edit::Insert { at: 0, value },
                stage,
            },
            previous: previous.map(|id| Previous {
                id,
                stage: stage - 1,
            }),
            priority: Priority {
                age: stage,
                peer: origin,
            },
        }
    }

    #[test]
    fn a_peer_starts_with_its_resend_timer_only() {
        let (st, cmds) = harness::start(&peer(3), Id::from(1), None);
        assert_eq!(cmds, vec![Cmd::SetTimer(Timer::Resend, RESEND_TICK)]);
        assert_eq!(st, PeerState::default());
    }

    /// Claim 1: a user's edit executes at once; its message goes to every other peer, the
    /// peer reports its journal, saves, and answers the user.
    #[test]
    fn a_user_edit_executes_at_once_goes_to_every_other_peer_and_is_saved() {
        let p = peer(3);
        let mut st = PeerState::default();
        let cmds = step(
            &p,
            1,
            &mut st,
            USER,
            StageMsg::Edit(Edit::Insert { at: 0, value: 7 }),
        );
        assert_eq!(st.doc.items, vec![7]);
        let m = StageMsg::Sync(sync(1, 1, 1, 1, None, 7));
        let report = StageMsg::Report(st.report.clone().expect("reported"));
        assert_eq!(
            cmds,
            vec![
                Cmd::Send(Id::from(0), m.clone()),
                Cmd::Send(Id::from(2), m),
                Cmd::Send(Id::from(0), report.clone()),
                Cmd::Send(Id::from(2), report),
                Cmd::Save(st.clone()),
                Cmd::Send(
                    Id::from(USER),
                    StageMsg::Edited {
                        id: OpId { origin: 1, seq: 1 },
                        stage: 1
                    }
                ),
            ]
        );
        // Showing the document changes nothing and saves nothing.
        let before = st.clone();
        assert_eq!(
            step(&p, 1, &mut st, USER, StageMsg::Show),
            vec![Cmd::Send(
                Id::from(USER),
                StageMsg::Document {
                    stage: 1,
                    stable: 0,
                    held: 0,
                    items: vec![7]
                }
            )]
        );
        assert_eq!(st, before);
    }

    #[test]
    fn a_higher_priority_operation_at_an_executed_stage_undoes_and_redoes() {
        let p = quiet(2);
        let mut st = PeerState::default();
        step(
            &p,
            0,
            &mut st,
            USER,
            StageMsg::Edit(Edit::Insert { at: 0, value: 1 }),
        );
        let theirs = sync(1, 1, 1, 1, None, 2);
        let cmds = step(&p, 0, &mut st, 1, StageMsg::Sync(theirs.clone()));
        let ids: Vec<OpId> = st.journal.iter().map(|e| e.sync.current.id).collect();
        assert_eq!(
            ids,
            vec![OpId { origin: 1, seq: 1 }, OpId { origin: 0, seq: 1 }]
        );
        assert_eq!(st.doc.items, vec![1, 2]);
        assert!(st.settled());
        // Its own operation again, at stage 2 after the winner, with its age kept; then the
        // save.
        let mut again = sync(0, 1, 2, 2, Some(theirs.current.id), 1);
        again.priority.age = 1;
        assert_eq!(
            cmds,
            vec![
                Cmd::Send(Id::from(1), StageMsg::Sync(again)),
                Cmd::Save(st.clone())
            ]
        );
        // The same message again changes nothing and saves nothing.
        assert_eq!(step(&p, 0, &mut st, 1, StageMsg::Sync(theirs)), vec![]);
    }

    #[test]
    fn a_lower_priority_message_of_the_same_stage_pair_is_requeued_not_dropped() {
        let p = quiet(3);
        let mut st = PeerState::default();
        // Both wait for stage 2 after an operation this peer has not executed.
        let before = OpId { origin: 0, seq: 9 };
        let low = sync(0, 1, 1, 2, Some(before), 1);
        let high = sync(1, 1, 1, 2, Some(before), 2);
        let cmds = step(&p, 2, &mut st, 0, StageMsg::Sync(low.clone()));
        assert_eq!(st.waiting.values().collect::<Vec<_>>(), vec![&low]);
        assert_eq!(cmds, vec![Cmd::Save(st.clone())], "held, and saved");
        let cmds = step(&p, 2, &mut st, 1, StageMsg::Sync(high.clone()));
        assert_eq!(st.waiting.values().collect::<Vec<_>>(), vec![&high]);
        assert_eq!(st.redo.values().collect::<Vec<_>>(), vec![&low]);
        assert!(st.journal.is_empty());
        assert_eq!(cmds, vec![Cmd::Save(st.clone())]);
    }

    /// The resend timer sends again the last message of each own operation above the base
    /// and the last report, and re-arms itself; it changes nothing, so it saves nothing.
    #[test]
    fn a_resend_sends_own_operations_and_the_report_again() {
        let p = peer(2);
        let mut st = PeerState::default();
        step(
            &p,
            0,
            &mut st,
            USER,
            StageMsg::Edit(Edit::Insert { at: 0, value: 5 }),
        );
        let before = st.clone();
        let cmds = harness::timeout(&p, Id::from(0), &mut st, &Timer::Resend);
        assert_eq!(st, before);
        assert_eq!(
            cmds,
            vec![
                Cmd::Send(Id::from(1), StageMsg::Sync(sync(0, 1, 1, 1, None, 5))),
                Cmd::Send(
                    Id::from(1),
                    StageMsg::Report(st.report.clone().expect("reported"))
                ),
                Cmd::SetTimer(Timer::Resend, RESEND_TICK),
            ]
        );
    }
}
