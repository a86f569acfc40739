//! A replica of protocol 3: holds items, knowledge and forgotten knowledge; makes local
//! changes; is the destination of the syncs it pulls and the source of the syncs others pull
//! from it (seed 004).
//!
//! ```text
//!   destination                                   source
//!   ─ RequestChanges{session, knowledge, filter} ─▶  enumerates what the destination
//!                                                    does not know (claim 9)
//!   ◀─ ConveyChanges{session, source, seq, change, ..} one per change (claims 1, 2, 21)
//!   ◀─ CompleteBundle{session, source, count, ..} ─── (claims 3, 4, 20)
//!   ─ AcknowledgeChange{id, outcome} ────────────▶   per change (claim 6)
//!   merges `learned` once all `count` changes are applied, then
//!   ─ ConveyKnowledge{session, knowledge} ───────▶   (claim 8)
//! ```
//!
//! Every rule is written once, at the handler that implements it.

use super::Mutant;
use super::msg::{Applied, Change, ConflictPolicy, SyncMsg, Timer};
use super::vector::{ChangeId, Filter, FilteredKnowledge, Knowledge, ReplicaId, maker};
use crate::store::Payload;
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, Id, Out};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One scripted local edit (the model's application writing an item).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct Edit<K: Payload, V: Payload> {
    /// The item.
    pub key: K,
    /// Its new value; `None` deletes it (a tombstone).
    pub value: Option<V>,
}

/// A replica's durable data: everything it saves, and all the sync state that outlives one
/// sync.
///
/// # Invariants
/// - Knowledge is sound: for every change it claims (in `knowledge`, or in a `filtered`
///   entry for that change's item), the replica holds a version of the item that is that
///   change or superseded it (in `items` or `conflicts`), or the change is in `forgotten`
///   ([`super::model::props::knowledge_sound`]).
/// - `counter` is at least every counter of this replica's own changes in `knowledge`, and
///   `sessions` every session number it used: both survive crashes, so neither is reused.
/// - Both are named by `incarnation`: a store created again after it was lost starts
///   counting afresh under a new incarnation, so neither is reused across the loss either
///   ([`maker`], [`ReplicaData::created`]).
#[derive(Clone, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(bound = "")]
pub struct ReplicaData<K: Payload, V: Payload> {
    /// Per key, the item's version: the last change applied (a tombstone for a deletion).
    pub items: BTreeMap<K, Change<K, V>>,
    /// Incoming changes that conflicted under [`ConflictPolicy::KeepBoth`], kept for the
    /// application; a later change of the item that supersedes one removes it.
    pub conflicts: BTreeSet<Change<K, V>>,
    /// The changes this replica knows for every item (claims 1, 9, 29).
    pub knowledge: Knowledge,
    /// Knowledge that holds for some items only, learned by filtered syncs (claim 20).
    pub filtered: Vec<FilteredKnowledge<K>>,
    /// The knowledge this replica had when it last forgot tombstones: a destination that does
    /// not include it may have missed a deletion (claim 21, minimum knowledge).
    pub forgotten: Knowledge,
    /// The incarnation of this store: its replica makes changes as
    /// `maker(id, incarnation)` (claim 29) and numbers its sessions from
    /// `incarnation << 32` ([`requester`]).
    pub incarnation: u32,
    /// The counter of this replica's last change (0: none yet).
    pub counter: u64,
    /// The last session number this replica used as a destination: its incarnation in the
    /// high 32 bits, how many syncs it pulled in the low ones (none yet: `incarnation << 32`).
    pub sessions: u64,
    /// As a source: per destination, the last session it answered. A request is answered
    /// once, so the changes and the complete-bundle message of one session always come from
    /// one enumeration (a duplicated request answered again after a local edit would send a
    /// second bundle under the same session, with another count).
    pub answered: BTreeMap<ReplicaId, u64>,
    /// The next scripted edit.
    pub next_edit: u32,
}

impl<K: Payload, V: Payload> Default for ReplicaData<K, V> {
    fn default() -> Self {
        ReplicaData {
            items: BTreeMap::new(),
            conflicts: BTreeSet::new(),
            knowledge: Knowledge::new(),
            filtered: Vec::new(),
            forgotten: Knowledge::new(),
            incarnation: 0,
            counter: 0,
            sessions: 0,
            answered: BTreeMap::new(),
            next_edit: 0,
        }
    }
}

impl<K: Payload, V: Payload> ReplicaData<K, V> {
    /// The data of a store created now as incarnation `incarnation`: nothing known, nothing
    /// made, no session pulled (issue 18: a replica created again after its store was lost
    /// takes a new incarnation, so it reuses none of the names it made before).
    pub fn created(incarnation: u32) -> Self {
        ReplicaData {
            incarnation,
            sessions: u64::from(incarnation) << 32,
            ..ReplicaData::default()
        }
    }

    /// The name replica `replica` makes its changes under with this store ([`maker`]).
    pub fn maker(&self, replica: ReplicaId) -> ReplicaId {
        maker(replica, self.incarnation)
    }

    /// How many syncs this store's replica pulled.
    pub fn sessions_pulled(&self) -> u64 {
        self.sessions
            .saturating_sub(u64::from(self.incarnation) << 32)
    }

    /// Whether this replica knows change `id` of the item at `key`.
    pub fn knows(&self, id: ChangeId, key: &K) -> bool {
        knows(&self.knowledge, &self.filtered, id, key)
    }

    /// Every version of the item at `key` this replica holds: its version and the changes
    /// kept for the application.
    pub fn versions<'a>(&'a self, key: &'a K) -> impl Iterator<Item = &'a Change<K, V>> + 'a {
        self.items
            .get(key)
            .into_iter()
            .chain(self.conflicts.iter().filter(move |c| c.key == *key))
    }

    /// The item's value (a tombstone or an absent item reads as `None`).
    pub fn read(&self, key: &K) -> Option<&V> {
        self.items.get(key).and_then(|c| c.value.as_ref())
    }

    /// The data an application sees: every live item's value.
    pub fn values(&self) -> BTreeMap<K, V> {
        self.items
            .iter()
            .filter_map(|(k, c)| c.value.clone().map(|v| (k.clone(), v)))
            .collect()
    }
}

/// Who asked for a session: the requester `src` as a maker, in the incarnation the session
/// number names (its high 32 bits, [`ReplicaData::sessions`]). A source answers each
/// (requester, session) once; a requester created again after its store was lost is a new
/// requester, whose sessions are answered afresh.
pub fn requester(src: Id, session: u64) -> ReplicaId {
    maker(usize::from(src) as ReplicaId, (session >> 32) as u32)
}

/// A session number as reports write it: `3` in incarnation 0, `1f.3` (the incarnation in
/// hex, then the count) otherwise.
pub fn session_name(session: u64) -> String {
    match session >> 32 {
        0 => session.to_string(),
        i => format!("{i:x}.{}", session & u64::from(u32::MAX)),
    }
}

/// Whether a replica with `knowledge` and `filtered` knows change `id` of the item at `key`.
pub fn knows<K: Ord>(
    knowledge: &Knowledge,
    filtered: &[FilteredKnowledge<K>],
    id: ChangeId,
    key: &K,
) -> bool {
    knowledge.contains(id) || filtered.iter().any(|f| f.contains(id, key))
}

/// The complete-bundle message of the open sync, kept until every change it counts is
/// applied (claim 4).
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Bundle<K: Payload> {
    /// How many changes the source sent.
    pub count: u32,
    /// Knowledge learned for every item.
    pub learned: Knowledge,
    /// Knowledge learned for the filtered items.
    pub filtered_learned: Option<FilteredKnowledge<K>>,
    /// The source's forgotten knowledge.
    pub forgotten: Knowledge,
}

/// The sync this replica pulls, as its destination.
///
/// # Invariants
/// `applied` holds the positions of the changes of this session applied (or found known),
/// so a duplicate is skipped and the count is checked against distinct changes.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Pull<K: Payload> {
    /// The session number sent in the request.
    pub session: u64,
    /// The source's actor index.
    pub source: usize,
    /// The source's maker, from the first message of its bundle taken: the sync takes no
    /// message of another incarnation of the source (see [`SyncMsg::ConveyChanges`]).
    pub maker: Option<ReplicaId>,
    /// The filter of the request.
    pub filter: Option<Filter<K>>,
    /// A full enumeration (after a refused minimum knowledge).
    pub recovery: bool,
    /// Positions of the changes applied.
    pub applied: BTreeSet<u32>,
    /// Keys conveyed (a full enumeration only): any other item the source knew is deleted.
    pub enumerated: BTreeSet<K>,
    /// The complete-bundle message, once received.
    pub complete: Option<Bundle<K>>,
}

/// A replica's state: its durable data and the sync it pulls.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ReplicaState<K: Payload, V: Payload> {
    /// Everything saved.
    pub data: ReplicaData<K, V>,
    /// The open sync, if any (lost on a crash: its learned knowledge is never merged).
    pub pull: Option<Pull<K>>,
}

/// The replica actor: its configuration. The state is [`ReplicaState`].
#[derive(Clone, Debug)]
pub struct Replica<K: Payload, V: Payload> {
    /// The replicas it pulls from, by its own timers (actor indices).
    pub peers: Vec<Id>,
    /// The replicas it advertises its changes to.
    pub advertise_to: Vec<Id>,
    /// Its local edits, in order.
    pub edits: Vec<Edit<K, V>>,
    /// The filter of the syncs it pulls (claim 19).
    pub filter: Option<Filter<K>>,
    /// How it resolves conflicts.
    pub policy: ConflictPolicy,
    /// Whether its timed pulls ask for a two-way sync (claim 22).
    pub two_way: bool,
    /// Whether the application may cancel an open sync (claim 7).
    pub cancel: bool,
    /// Whether it forgets tombstones.
    pub purge: bool,
    /// How many syncs it may pull in one run of the model, per incarnation (bounds the
    /// state space; the runtime sets it to `u64::MAX`).
    pub max_sessions: u64,
    /// The incarnation a store created now takes: what a replica that starts with nothing
    /// saved begins as ([`ReplicaData::created`]). The model's replicas start as 0, and a
    /// store lost while its replica is down comes back as a later one
    /// ([`super::model::KnowledgeModel`]); the runtime draws one at random for every
    /// process, which counts only when its store was just created (`--init`).
    pub incarnation: u32,
    /// A deliberate bug.
    pub mutant: Option<Mutant>,
}

const TICK: std::ops::Range<Duration> = Duration::from_millis(10)..Duration::from_millis(20);

impl<K: Payload, V: Payload> Replica<K, V> {
    fn is(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }

    fn me(id: Id) -> ReplicaId {
        usize::from(id) as u64
    }

    /// Saves the durable data. The mutant [`Mutant::ReuseCounterAfterCrash`] keeps the
    /// change counter in memory only.
    pub(crate) fn save(&self, data: &ReplicaData<K, V>, o: &mut Out<Self>) {
        let mut saved = data.clone();
        if self.is(Mutant::ReuseCounterAfterCrash) {
            saved.counter = 0;
        }
        o.save(saved);
    }

    /// Records a new change of this replica to the item at `key` (a local edit, or the
    /// resolution of a conflict): a fresh id from the saved counter (claims 1, 29), and
    /// made-with knowledge = this replica's knowledge joined with the made-with knowledge of
    /// every version of the item it replaces, so that "happened before" stays visible in one
    /// comparison (claim 2).
    pub fn make_change(
        id: Id,
        data: &mut ReplicaData<K, V>,
        key: K,
        value: Option<V>,
        also_replaces: Option<&Change<K, V>>,
    ) -> ChangeId {
        let mut made_with = data.knowledge.clone();
        for v in data.versions(&key).chain(also_replaces) {
            made_with.insert(v.id);
            made_with.union(&v.made_with);
        }
        data.counter += 1;
        let cid = ChangeId {
            replica: data.maker(Self::me(id)),
            counter: data.counter,
        };
        data.conflicts.retain(|c| c.key != key);
        data.knowledge.insert(cid);
        data.items.insert(
            key.clone(),
            Change {
                id: cid,
                key,
                value,
                made_with,
            },
        );
        cid
    }

    /// Applies one incoming change (claims 9, 27) and says what happened (claim 6), or `None`
    /// when the change is known already (applying it again changes nothing).
    ///
    /// Conflict detection (claims 2, 10): the incoming change supersedes the local version
    /// when its made-with knowledge contains it; the local version supersedes the incoming
    /// change when the local made-with knowledge contains it; otherwise they are concurrent
    /// and the policy decides. A concurrent update is never overwritten silently: it is
    /// reported (the acknowledgement) and either resolved into a new change that supersedes
    /// both, or kept for the application.
    pub fn apply(
        id: Id,
        data: &mut ReplicaData<K, V>,
        change: Change<K, V>,
        policy: ConflictPolicy,
    ) -> Option<Applied<K, V>> {
        if data.knows(change.id, &change.key) {
            return None;
        }
        let local = data.items.get(&change.key).cloned();
        let outcome = match local {
            Some(l) if l.supersedes(&change) => Applied::Obsolete { by: l },
            Some(l) if !change.supersedes(&l) => {
                match policy {
                    ConflictPolicy::SourceWins => {
                        Self::make_change(
                            id,
                            data,
                            change.key.clone(),
                            change.value.clone(),
                            Some(&change),
                        );
                    }
                    ConflictPolicy::DestinationWins => {
                        Self::make_change(
                            id,
                            data,
                            change.key.clone(),
                            l.value.clone(),
                            Some(&change),
                        );
                    }
                    ConflictPolicy::KeepBoth => {
                        data.conflicts.insert(change.clone());
                    }
                }
                Applied::Conflict {
                    local: l,
                    resolution: policy,
                }
            }
            replaced => {
                let replaced = replaced.map(|l| l.id);
                data.conflicts
                    .retain(|c| c.key != change.key || !change.supersedes(c));
                data.items.insert(change.key.clone(), change.clone());
                Applied::Applied { replaced }
            }
        };
        data.knowledge.insert(change.id);
        Some(outcome)
    }

    /// Opens a sync from `source` (claims 1, 9, 19): a fresh session number, saved before the
    /// request leaves so it is never reused. Replaces an open sync (after a refusal), whose
    /// learned knowledge is then never merged.
    pub(crate) fn start_pull(
        &self,
        state: &mut Cow<ReplicaState<K, V>>,
        source: Id,
        recovery: bool,
        two_way: bool,
        o: &mut Out<Self>,
    ) {
        if state.data.sessions_pulled() >= self.max_sessions {
            return;
        }
        let st = state.to_mut();
        st.data.sessions += 1;
        let session = st.data.sessions;
        st.pull = Some(Pull {
            session,
            source: usize::from(source),
            maker: None,
            filter: self.filter.clone(),
            recovery,
            applied: BTreeSet::new(),
            enumerated: BTreeSet::new(),
            complete: None,
        });
        self.save(&st.data, o);
        o.send(
            source,
            SyncMsg::RequestChanges {
                session,
                knowledge: st.data.knowledge.clone(),
                filtered: st.data.filtered.clone(),
                filter: self.filter.clone(),
                recovery,
                two_way,
            },
        );
        if self.cancel {
            o.set_timer(Timer::Cancel, TICK);
        }
    }

    /// As the source: answers a request with every change the destination does not know, one
    /// message each, then the complete bundle (claims 9, 15, 16, 37). Returns whether it
    /// answered: a request is answered once.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        id: Id,
        state: &mut Cow<ReplicaState<K, V>>,
        dst: Id,
        session: u64,
        knowledge: &Knowledge,
        filtered: &[FilteredKnowledge<K>],
        filter: Option<Filter<K>>,
        recovery: bool,
        o: &mut Out<Self>,
    ) -> bool {
        let from = requester(dst, session);
        if state
            .data
            .answered
            .get(&from)
            .is_some_and(|s| *s >= session)
        {
            // Answered already (a duplicate or an older request).
            return false;
        }
        let st = state.to_mut();
        st.data.answered.insert(from, session);
        self.save(&st.data, o);
        let d = &st.data;
        let source = d.maker(Self::me(id));
        // Claim 21: a destination that lacks the forgotten knowledge may have missed a
        // deletion; a full enumeration needs no minimum.
        let minimum = (!recovery && !d.forgotten.is_empty()).then(|| d.forgotten.clone());
        let mut seq = 0u32;
        for change in d.items.values().chain(d.conflicts.iter()) {
            let in_filter = filter.as_ref().is_none_or(|f| f.matches(&change.key));
            if in_filter && (recovery || !knows(knowledge, filtered, change.id, &change.key)) {
                o.send(
                    dst,
                    SyncMsg::ConveyChanges {
                        session,
                        source,
                        seq,
                        change: change.clone(),
                        minimum: minimum.clone(),
                    },
                );
                seq += 1;
            }
        }
        let (learned, filtered_learned) = match &filter {
            None => (d.knowledge.clone(), None),
            Some(f) => (Knowledge::new(), Some(d.knowledge.project(f))),
        };
        o.send(
            dst,
            SyncMsg::CompleteBundle {
                session,
                source,
                count: seq,
                learned,
                filtered_learned,
                forgotten: d.forgotten.clone(),
            },
        );
        true
    }

    /// The open sync, if `src` and `session` name it and `maker` is the incarnation of the
    /// source it takes messages from (the first one taken sets it).
    fn open<'a>(
        &self,
        state: &'a ReplicaState<K, V>,
        src: Id,
        session: u64,
        maker: ReplicaId,
    ) -> Option<&'a Pull<K>> {
        state.pull.as_ref().filter(|p| {
            p.session == session
                && p.source == usize::from(src)
                && (p.maker.is_none_or(|m| m == maker) || self.is(Mutant::MixIncarnations))
        })
    }

    /// Refuses the open sync because this replica lacks the source's minimum knowledge
    /// (claim 21): cancels the flow (claim 7) and asks for a full enumeration instead.
    fn refuse(
        &self,
        state: &mut Cow<ReplicaState<K, V>>,
        src: Id,
        session: u64,
        o: &mut Out<Self>,
    ) {
        state.to_mut().pull = None;
        o.send(src, SyncMsg::CancelChangeFlow { session });
        self.start_pull(state, src, true, false, o);
    }

    /// Merges the bundle's learned knowledge once every change it counts has been applied
    /// (claims 4, 12): never before, so knowledge never claims a change not applied.
    fn try_complete(&self, state: &mut Cow<ReplicaState<K, V>>, o: &mut Out<Self>) {
        let Some(pull) = &state.pull else { return };
        let Some(bundle) = &pull.complete else { return };
        let all_applied = pull.applied.len() == bundle.count as usize
            && pull.applied.iter().all(|s| *s < bundle.count);
        if !all_applied && !self.is(Mutant::MergeLearnedEarly) {
            return;
        }
        let st = state.to_mut();
        // Both were just checked to be set.
        let Some(pull) = st.pull.take() else { return };
        let Some(bundle) = pull.complete else { return };
        let d = &mut st.data;
        if pull.recovery {
            // A full enumeration: an item the source knew but did not send was deleted there
            // and its tombstone forgotten; delete it here too, and adopt the forgotten
            // knowledge.
            let gone = |c: &Change<K, V>| {
                pull.filter.as_ref().is_none_or(|f| f.matches(&c.key))
                    && !pull.enumerated.contains(&c.key)
                    && (bundle.learned.contains(c.id)
                        || bundle
                            .filtered_learned
                            .as_ref()
                            .is_some_and(|f| f.contains(c.id, &c.key)))
            };
            d.items.retain(|_, c| !gone(c));
            d.conflicts.retain(|c| !gone(c));
            d.forgotten.union(&bundle.forgotten);
        }
        d.knowledge.union(&bundle.learned);
        if let Some(fl) = bundle.filtered_learned {
            match d.filtered.iter_mut().find(|f| f.filter == fl.filter) {
                Some(f) => f.knowledge.union(&fl.knowledge),
                None => {
                    d.filtered.push(fl);
                    d.filtered.sort();
                }
            }
        }
        self.save(d, o);
        o.send(
            Id::from(pull.source),
            SyncMsg::ConveyKnowledge {
                session: pull.session,
                knowledge: d.knowledge.clone(),
            },
        );
        if self.cancel {
            o.cancel_timer(Timer::Cancel);
        }
    }

    /// Forgets tombstones whose made-with knowledge this replica fully knows, and records its
    /// knowledge as forgotten (claim 21). A tombstone with unknown history is kept: forgetting
    /// it would let an older change of the item come back without a conflict.
    pub(crate) fn purge(&self, state: &mut Cow<ReplicaState<K, V>>, o: &mut Out<Self>) {
        let d = &state.data;
        let purgeable = |c: &Change<K, V>| c.value.is_none() && d.knowledge.includes(&c.made_with);
        if !d.items.values().any(purgeable) {
            return;
        }
        let st = state.to_mut();
        let d = &mut st.data;
        let knowledge = d.knowledge.clone();
        d.items
            .retain(|_, c| !(c.value.is_none() && knowledge.includes(&c.made_with)));
        d.forgotten.union(&knowledge);
        self.save(d, o);
    }
}

impl<K: Payload, V: Payload> Actor for Replica<K, V> {
    type Msg = SyncMsg<K, V>;
    type State = ReplicaState<K, V>;
    type Timer = Timer;
    type Storage = ReplicaData<K, V>;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        let mut data = storage
            .clone()
            .unwrap_or_else(|| ReplicaData::created(self.incarnation));
        if self.is(Mutant::ForgetIncarnation) {
            // Names its changes and sessions as the first incarnation did.
            data.sessions = data.sessions_pulled();
            data.incarnation = 0;
        }
        if (data.next_edit as usize) < self.edits.len() {
            o.set_timer(Timer::Edit, TICK);
        }
        if data.sessions_pulled() < self.max_sessions {
            for p in &self.peers {
                o.set_timer(Timer::Pull(usize::from(*p)), TICK);
            }
        }
        if self.purge {
            o.set_timer(Timer::Purge, TICK);
        }
        ReplicaState { data, pull: None }
    }

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        match msg {
            SyncMsg::RequestChanges {
                session,
                knowledge,
                filtered,
                filter,
                recovery,
                two_way,
            } => {
                let answered = self.answer(
                    id, state, src, session, &knowledge, &filtered, filter, recovery, o,
                );
                // Claim 22: two-way sync, the source pulls back (once, not two-way again).
                if answered && two_way && state.pull.is_none() {
                    self.start_pull(state, src, false, false, o);
                }
            }
            SyncMsg::ConveyChanges {
                session,
                source,
                seq,
                change,
                minimum,
            } => {
                // A change of no open sync (stale, duplicated after completion, or
                // cancelled, or sent by another incarnation of the source) is ignored: a
                // cancelled flow applies nothing more (claim 7).
                let Some(pull) = self.open(state, src, session, source) else {
                    return;
                };
                if pull.applied.contains(&seq) {
                    // A duplicate: applied already.
                    return;
                }
                if let Some(min) = &minimum
                    && !pull.recovery
                    && !state.data.knowledge.includes(min)
                {
                    self.refuse(state, src, session, o);
                    return;
                }
                if pull
                    .filter
                    .as_ref()
                    .is_some_and(|f| !f.matches(&change.key))
                {
                    // Outside the filter the request named: a broken source; never counted,
                    // so the bundle never completes.
                    return;
                }
                let recovery = pull.recovery;
                let cid = change.id;
                let key = change.key.clone();
                let st = state.to_mut();
                let before = st.data.clone();
                let outcome = Self::apply(id, &mut st.data, change, self.policy);
                if let Some(pull) = st.pull.as_mut() {
                    pull.maker = Some(source);
                    pull.applied.insert(seq);
                    if recovery {
                        pull.enumerated.insert(key);
                    }
                }
                if st.data != before {
                    self.save(&st.data, o);
                }
                if let Some(outcome) = outcome {
                    o.send(
                        src,
                        SyncMsg::AcknowledgeChange {
                            session,
                            id: cid,
                            outcome,
                        },
                    );
                }
                self.try_complete(state, o);
            }
            SyncMsg::CompleteBundle {
                session,
                source,
                count,
                learned,
                filtered_learned,
                forgotten,
            } => {
                let Some(pull) = self.open(state, src, session, source) else {
                    return;
                };
                if pull.complete.is_some() {
                    // A duplicate.
                    return;
                }
                if !pull.recovery && !state.data.knowledge.includes(&forgotten) {
                    // Claim 21 for a bundle with no change to carry the minimum.
                    self.refuse(state, src, session, o);
                    return;
                }
                if let Some(pull) = state.to_mut().pull.as_mut() {
                    pull.maker = Some(source);
                    pull.complete = Some(Bundle {
                        count,
                        learned,
                        filtered_learned,
                        forgotten,
                    });
                }
                self.try_complete(state, o);
            }
            SyncMsg::AdvertiseChanges { knowledge } => {
                // Claim 14: a replica that learns of changes it lacks asks for them.
                if state.pull.is_none() && !state.data.knowledge.includes(&knowledge) {
                    self.start_pull(state, src, false, false, o);
                }
            }
            // The source keeps no per-sync state: it sent the whole bundle at once, so a
            // cancel, an acknowledgement or new knowledge of the destination needs no action
            // (a source that streams would stop on CancelChangeFlow).
            SyncMsg::AcknowledgeChange { .. }
            | SyncMsg::CancelChangeFlow { .. }
            | SyncMsg::ConveyKnowledge { .. } => {}
        }
    }

    fn on_timeout(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        match *timer {
            Timer::Edit => {
                let i = state.data.next_edit as usize;
                let Some(edit) = self.edits.get(i).cloned() else {
                    return;
                };
                let st = state.to_mut();
                st.data.next_edit += 1;
                Self::make_change(id, &mut st.data, edit.key, edit.value, None);
                self.save(&st.data, o);
                for p in &self.advertise_to {
                    o.send(
                        *p,
                        SyncMsg::AdvertiseChanges {
                            knowledge: st.data.knowledge.clone(),
                        },
                    );
                }
                if i + 1 < self.edits.len() {
                    o.set_timer(Timer::Edit, TICK);
                }
            }
            Timer::Pull(peer) => {
                // One sync at a time: an open sync ends by completing, by a refusal or by a
                // cancel (the runtime cancels a sync that stalls).
                if state.pull.is_none() {
                    self.start_pull(state, Id::from(peer), false, self.two_way, o);
                }
                if state.data.sessions_pulled() < self.max_sessions {
                    o.set_timer(Timer::Pull(peer), TICK);
                }
            }
            Timer::Cancel => {
                if let Some(pull) = state.pull.as_ref() {
                    let (source, session) = (Id::from(pull.source), pull.session);
                    state.to_mut().pull = None;
                    o.send(source, SyncMsg::CancelChangeFlow { session });
                }
            }
            Timer::Purge => {
                self.purge(state, o);
                o.set_timer(Timer::Purge, TICK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{self, Cmd, Cmds};
    use proptest::prelude::*;

    type R = Replica<u8, u8>;
    type St = ReplicaState<u8, u8>;
    type M = SyncMsg<u8, u8>;

    fn replica(edits: Vec<Edit<u8, u8>>) -> R {
        Replica {
            peers: vec![],
            advertise_to: vec![],
            edits,
            filter: None,
            policy: ConflictPolicy::DestinationWins,
            two_way: false,
            cancel: false,
            purge: false,
            max_sessions: u64::MAX,
            incarnation: 0,
            mutant: None,
        }
    }

    fn put(key: u8, value: u8) -> Edit<u8, u8> {
        Edit {
            key,
            value: Some(value),
        }
    }

    fn start(r: &R, id: usize) -> St {
        r.on_start(Id::from(id), &None, &mut Out::new())
    }

    /// One message step: its exact commands.
    fn step(r: &R, id: usize, state: &mut St, src: usize, m: M) -> Cmds<R> {
        harness::msg(r, Id::from(id), state, Id::from(src), m)
    }

    /// One timer step: its exact commands.
    fn fire(r: &R, id: usize, state: &mut St, t: Timer) -> Cmds<R> {
        harness::timeout(r, Id::from(id), state, &t)
    }

    /// The messages of `cmds`, with their recipients (for scenario tests that run a whole
    /// exchange; the transition tests below state every command).
    fn sends(cmds: Cmds<R>) -> Vec<(Id, M)> {
        cmds.into_iter()
            .filter_map(|c| match c {
                Cmd::Send(dst, m) => Some((dst, m)),
                _ => None,
            })
            .collect()
    }

    /// Runs one message step; returns the messages sent, with their recipients.
    fn msg(r: &R, id: usize, state: &mut St, src: usize, m: M) -> Vec<(Id, M)> {
        sends(step(r, id, state, src, m))
    }

    fn timer(r: &R, id: usize, state: &mut St, t: Timer) -> Vec<(Id, M)> {
        sends(fire(r, id, state, t))
    }

    fn cid(replica: u64, counter: u64) -> ChangeId {
        ChangeId { replica, counter }
    }

    /// An edit saves the new change (its id from the saved counter) before anything, and
    /// arms the next edit while one is left.
    #[test]
    fn an_edit_saves_its_change_and_arms_the_next_edit() {
        let r = replica(vec![put(0, 1), put(1, 2)]);
        let (mut a, start) = harness::start(&r, Id::from(0), None);
        assert_eq!(start, vec![Cmd::SetTimer(Timer::Edit, TICK)]);
        let cmds = fire(&r, 0, &mut a, Timer::Edit);
        assert_eq!(a.data.items[&0].id, cid(0, 1));
        assert_eq!(
            cmds,
            vec![Cmd::Save(a.data.clone()), Cmd::SetTimer(Timer::Edit, TICK)]
        );
        let cmds = fire(&r, 0, &mut a, Timer::Edit);
        assert_eq!(
            cmds,
            vec![Cmd::Save(a.data.clone())],
            "the last edit arms none"
        );
        assert_eq!(fire(&r, 0, &mut a, Timer::Edit), vec![], "no edit is left");
    }

    /// A sync, step by step: the pull saves its session before the request leaves; the
    /// source saves that it answered, then sends each change and the complete bundle; the
    /// destination saves each change before acknowledging it, and merges the learned
    /// knowledge (saved) only with the last, then tells the source. Duplicates do nothing.
    #[test]
    fn a_sync_saves_before_each_message_and_merges_knowledge_last() {
        let (ra, rb) = (replica(vec![put(0, 1), put(1, 2)]), replica(vec![]));
        let mut a = edited(&ra, 0);
        let mut b = start(&rb, 1);
        let cmds = fire(&rb, 1, &mut b, Timer::Pull(0));
        let request = SyncMsg::RequestChanges {
            session: 1,
            knowledge: Knowledge::new(),
            filtered: vec![],
            filter: None,
            recovery: false,
            two_way: false,
        };
        assert_eq!(b.data.sessions, 1);
        assert_eq!(
            cmds,
            vec![
                Cmd::Save(b.data.clone()),
                Cmd::Send(Id::from(0), request.clone()),
                Cmd::SetTimer(Timer::Pull(0), TICK),
            ]
        );
        // The source.
        let cmds = step(&ra, 0, &mut a, 1, request.clone());
        assert_eq!(a.data.answered.get(&1), Some(&1));
        let items = a.data.items.clone();
        let convey = |seq: u32, key: u8| SyncMsg::ConveyChanges {
            session: 1,
            source: 0,
            seq,
            change: items[&key].clone(),
            minimum: None,
        };
        let complete = SyncMsg::CompleteBundle {
            session: 1,
            source: 0,
            count: 2,
            learned: a.data.knowledge.clone(),
            filtered_learned: None,
            forgotten: Knowledge::new(),
        };
        assert_eq!(
            cmds,
            vec![
                Cmd::Save(a.data.clone()),
                Cmd::Send(Id::from(1), convey(0, 0)),
                Cmd::Send(Id::from(1), convey(1, 1)),
                Cmd::Send(Id::from(1), complete.clone()),
            ]
        );
        assert_eq!(step(&ra, 0, &mut a, 1, request), vec![], "answered once");
        // The destination: the bundle's end first, then each change.
        assert_eq!(step(&rb, 1, &mut b, 0, complete.clone()), vec![]);
        let cmds = step(&rb, 1, &mut b, 0, convey(0, 0));
        let ack = |id, replaced| SyncMsg::AcknowledgeChange {
            session: 1,
            id,
            outcome: Applied::Applied { replaced },
        };
        assert_eq!(
            cmds,
            vec![
                Cmd::Save(b.data.clone()),
                Cmd::Send(Id::from(0), ack(cid(0, 1), None)),
            ]
        );
        assert_eq!(step(&rb, 1, &mut b, 0, convey(0, 0)), vec![], "a duplicate");
        let before_merge = {
            let mut d = b.data.clone();
            R::apply(
                Id::from(1),
                &mut d,
                a.data.items[&1].clone(),
                ConflictPolicy::DestinationWins,
            );
            d
        };
        let cmds = step(&rb, 1, &mut b, 0, convey(1, 1));
        assert_eq!(b.data.knowledge, a.data.knowledge);
        assert!(b.pull.is_none());
        assert_eq!(
            cmds,
            vec![
                Cmd::Save(before_merge),
                Cmd::Send(Id::from(0), ack(cid(0, 2), None)),
                Cmd::Save(b.data.clone()),
                Cmd::Send(
                    Id::from(0),
                    SyncMsg::ConveyKnowledge {
                        session: 1,
                        knowledge: a.data.knowledge.clone(),
                    }
                ),
            ]
        );
        // Late copies of the closed sync change nothing.
        assert_eq!(step(&rb, 1, &mut b, 0, convey(1, 1)), vec![]);
        assert_eq!(step(&rb, 1, &mut b, 0, complete), vec![]);
    }

    /// A conflict resolved by the destination is a new change of the destination, saved
    /// before the acknowledgement that reports the conflict.
    #[test]
    fn a_resolved_conflict_is_saved_before_it_is_acknowledged() {
        let ra = replica(vec![put(0, 1)]);
        let rb = replica(vec![put(0, 2)]);
        let (mut a, mut b) = (edited(&ra, 0), edited(&rb, 1));
        let local = a.data.items[&0].clone();
        let req = timer(&ra, 0, &mut a, Timer::Pull(1));
        let answer = msg(&rb, 1, &mut b, 0, req[0].1.clone());
        let cmds = step(&ra, 0, &mut a, 1, answer[0].1.clone());
        assert_eq!(a.data.items[&0].id, cid(0, 2), "a new change of replica 0");
        assert_eq!(a.data.read(&0), Some(&1), "the destination's value");
        assert_eq!(
            cmds,
            vec![
                Cmd::Save(a.data.clone()),
                Cmd::Send(
                    Id::from(1),
                    SyncMsg::AcknowledgeChange {
                        session: 1,
                        id: cid(1, 1),
                        outcome: Applied::Conflict {
                            local,
                            resolution: ConflictPolicy::DestinationWins,
                        },
                    }
                ),
            ]
        );
    }

    /// Replica `id` makes all its edits.
    fn edited(r: &R, id: usize) -> St {
        let mut s = start(r, id);
        for _ in 0..r.edits.len() {
            timer(r, id, &mut s, Timer::Edit);
        }
        s
    }

    /// `dst` pulls from `src` and takes every answer in order; returns the answer.
    fn pull(rd: &R, d: usize, ds: &mut St, rs: &R, s: usize, ss: &mut St) -> Vec<M> {
        let req = timer(rd, d, ds, Timer::Pull(s));
        assert!(matches!(req[0].1, SyncMsg::RequestChanges { .. }));
        let answer: Vec<M> = msg(rs, s, ss, d, req[0].1.clone())
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        for m in &answer {
            msg(rd, d, ds, s, m.clone());
        }
        answer
    }

    #[test]
    fn learned_knowledge_waits_for_every_counted_change() {
        let (ra, rb) = (replica(vec![put(0, 1), put(1, 2)]), replica(vec![]));
        let mut a = edited(&ra, 0);
        let mut b = start(&rb, 1);
        let req = timer(&rb, 1, &mut b, Timer::Pull(0));
        let answer = msg(&ra, 0, &mut a, 1, req[0].1.clone());
        assert_eq!(answer.len(), 3, "two changes and the complete bundle");
        // The complete bundle first: nothing is learned yet.
        msg(&rb, 1, &mut b, 0, answer[2].1.clone());
        assert!(b.data.knowledge.is_empty());
        msg(&rb, 1, &mut b, 0, answer[0].1.clone());
        assert_eq!(b.data.knowledge.ids().count(), 1);
        let last = msg(&rb, 1, &mut b, 0, answer[1].1.clone());
        assert_eq!(b.data.knowledge, a.data.knowledge);
        assert_eq!(b.data.values(), a.data.values());
        assert!(b.pull.is_none());
        assert!(
            last.iter()
                .any(|(_, m)| matches!(m, SyncMsg::ConveyKnowledge { .. })),
            "claim 8: the destination tells the source its knowledge changed"
        );
    }

    #[test]
    fn one_way_then_the_other_way_converges_without_concurrent_edits() {
        let (ra, rb) = (replica(vec![put(0, 1)]), replica(vec![put(1, 2)]));
        let (mut a, mut b) = (edited(&ra, 0), edited(&rb, 1));
        pull(&ra, 0, &mut a, &rb, 1, &mut b);
        pull(&rb, 1, &mut b, &ra, 0, &mut a);
        assert_eq!(a.data.knowledge, b.data.knowledge);
        assert_eq!(a.data.values(), b.data.values());
        assert_eq!(a.data.values().len(), 2);
    }

    #[test]
    fn concurrent_edits_conflict_under_each_policy() {
        for policy in ConflictPolicy::ALL {
            let ra = Replica {
                policy,
                ..replica(vec![put(0, 1)])
            };
            let rb = replica(vec![put(0, 2)]);
            let (mut a, mut b) = (edited(&ra, 0), edited(&rb, 1));
            let req = timer(&ra, 0, &mut a, Timer::Pull(1));
            let answer = msg(&rb, 1, &mut b, 0, req[0].1.clone());
            let acks = msg(&ra, 0, &mut a, 1, answer[0].1.clone());
            assert!(
                matches!(&acks[0].1, SyncMsg::AcknowledgeChange { outcome: Applied::Conflict { resolution, .. }, .. } if *resolution == policy),
                "{policy:?}: {acks:?}"
            );
            match policy {
                ConflictPolicy::SourceWins => assert_eq!(a.data.read(&0), Some(&2)),
                ConflictPolicy::DestinationWins => assert_eq!(a.data.read(&0), Some(&1)),
                ConflictPolicy::KeepBoth => {
                    assert_eq!(a.data.read(&0), Some(&1));
                    assert_eq!(a.data.conflicts.len(), 1);
                }
            }
        }
    }

    #[test]
    fn a_destination_without_the_minimum_knowledge_refuses_and_asks_for_a_full_enumeration() {
        let ra = Replica {
            purge: true,
            ..replica(vec![
                put(0, 1),
                Edit {
                    key: 0,
                    value: None,
                },
                put(1, 5),
            ])
        };
        let rb = replica(vec![]);
        let mut a = edited(&ra, 0);
        timer(&ra, 0, &mut a, Timer::Purge);
        assert!(!a.data.items.contains_key(&0), "the tombstone is forgotten");
        assert!(!a.data.forgotten.is_empty());
        let mut b = start(&rb, 1);
        // B holds A's first change (key 0) from an earlier sync.
        let first = Change {
            id: ChangeId {
                replica: 0,
                counter: 1,
            },
            key: 0,
            value: Some(1),
            made_with: Knowledge::new(),
        };
        R::apply(
            Id::from(1),
            &mut b.data,
            first,
            ConflictPolicy::DestinationWins,
        );
        let req = timer(&rb, 1, &mut b, Timer::Pull(0));
        let answer = msg(&ra, 0, &mut a, 1, req[0].1.clone());
        let refusal = msg(&rb, 1, &mut b, 0, answer[0].1.clone());
        assert!(matches!(
            refusal[0].1,
            SyncMsg::CancelChangeFlow { session: 1 }
        ));
        assert!(matches!(
            refusal[1].1,
            SyncMsg::RequestChanges {
                session: 2,
                recovery: true,
                ..
            }
        ));
        assert_eq!(
            b.data.read(&1),
            None,
            "nothing of the refused bundle applied"
        );
        for m in msg(&ra, 0, &mut a, 1, refusal[1].1.clone()) {
            msg(&rb, 1, &mut b, 0, m.1);
        }
        assert_eq!(b.data.values(), a.data.values());
        assert!(!b.data.items.contains_key(&0), "the deletion reached B");
        assert_eq!(b.data.knowledge, a.data.knowledge);
    }

    #[test]
    fn a_cancelled_sync_merges_nothing_more() {
        let ra = replica(vec![put(0, 1), put(1, 2)]);
        let rb = Replica {
            cancel: true,
            ..replica(vec![])
        };
        let mut a = edited(&ra, 0);
        let mut b = start(&rb, 1);
        let req = timer(&rb, 1, &mut b, Timer::Pull(0));
        let answer = msg(&ra, 0, &mut a, 1, req[0].1.clone());
        msg(&rb, 1, &mut b, 0, answer[0].1.clone());
        let before = b.data.clone();
        let cancel = timer(&rb, 1, &mut b, Timer::Cancel);
        assert!(matches!(
            cancel[0].1,
            SyncMsg::CancelChangeFlow { session: 1 }
        ));
        for (_, m) in &answer {
            assert!(msg(&rb, 1, &mut b, 0, m.clone()).is_empty());
        }
        assert_eq!(b.data, before);
    }

    proptest! {
        /// A bundle's messages delivered in any order, any number of times, give the same
        /// data as delivering them once in order.
        #[test]
        fn a_bundle_in_any_order_any_number_of_times_gives_the_same_data(
            order in prop::collection::vec(0usize..4, 1..16),
        ) {
            let ra = replica(vec![put(0, 1), put(1, 2), put(2, 3)]);
            let rb = replica(vec![put(3, 4)]);
            let mut a = edited(&ra, 0);
            let mut in_order = edited(&rb, 1);
            let mut shuffled = in_order.clone();
            let answer = pull(&rb, 1, &mut in_order, &ra, 0, &mut a.clone());
            let req = timer(&rb, 1, &mut shuffled, Timer::Pull(0));
            let answer2 = msg(&ra, 0, &mut a, 1, req[0].1.clone());
            prop_assert_eq!(answer.len(), answer2.len());
            for i in order.iter().copied().chain(0..answer2.len()) {
                let (_, m) = &answer2[i % answer2.len()];
                msg(&rb, 1, &mut shuffled, 0, m.clone());
            }
            prop_assert_eq!(&shuffled.data.items, &in_order.data.items);
            prop_assert_eq!(&shuffled.data.knowledge, &in_order.data.knowledge);
        }
    }
}
