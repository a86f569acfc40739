//! The checked system of protocol 3: 2–3 replicas with scripted local edits and timed pulls,
//! over an unordered duplicating network (optionally lossy) with crashes; the ghost history
//! the properties read; the properties.
//!
//! Actor ids: replica `i` is actor `i`, and its [`super::ChangeId`]s name replica `i` in the
//! incarnation of its store ([`super::vector::maker`]): 0 at first, and after the `k`-th loss
//! of a store in the run (`--disk-faults`), `k`.

use super::Mutant;
use super::msg::Timer;
use super::msg::{Applied, Change, ConflictPolicy, SyncMsg};
use super::replica::{Edit, Replica, ReplicaData, ReplicaState, requester};
use super::vector::{ChangeId, Filter, Knowledge};
use crate::store::Payload;
use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id, LossyNetwork, Network, Out,
};
use stateright::{Expectation, Model, Path, Property};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The model's item key.
pub type Key = u8;
/// The model's item value.
pub type Value = u8;
/// The model's change.
pub type ModelChange = Change<Key, Value>;

/// A named starting point: which replicas edit what, who pulls from whom, with which filter.
/// Each scenario makes one reachability property reachable in a small space.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Scenario {
    /// Two replicas write the same item while apart, then pull from each other: a conflict.
    Conflict,
    /// Replica 0 writes and deletes an item and forgets the tombstone; replica 1 pulls, is
    /// refused for lacking the minimum knowledge, and recovers by full enumeration.
    Recovery,
    /// Replica 1 pulls only item 1 from replica 0, which wrote items 0 and 1.
    Filtered,
    /// Three replicas in a ring, each pulling from the one before it; two write their own
    /// item. Two rounds of the ring bring every change to everyone, in any order.
    Converge,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 4] = [
        Scenario::Conflict,
        Scenario::Recovery,
        Scenario::Filtered,
        Scenario::Converge,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Conflict => "conflict",
            Scenario::Recovery => "recovery",
            Scenario::Filtered => "filtered",
            Scenario::Converge => "converge",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A model configuration of protocol 3; [`KnowledgeConfig::into_model`] builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct KnowledgeConfig {
    /// The scenario it started from (for display).
    pub scenario: Scenario,
    /// Per replica, its local edits.
    pub edits: Vec<Vec<Edit<Key, Value>>>,
    /// Timed pulls: (destination, source).
    pub pulls: Vec<(usize, usize)>,
    /// Per replica, the filter of the syncs it pulls.
    pub filters: Vec<Option<Filter<Key>>>,
    /// Replicas that forget tombstones.
    pub purging: Vec<usize>,
    /// The conflict policy of every replica.
    pub policy: ConflictPolicy,
    /// Whether timed pulls are two-way.
    pub two_way: bool,
    /// Whether replicas advertise their edits to every other replica.
    pub advertise: bool,
    /// Whether the application may cancel an open sync.
    pub cancel: bool,
    /// How many syncs each replica may pull.
    pub sessions: u64,
    /// Whether messages can be lost.
    pub lossy: bool,
    /// How many replicas may be down at the same time.
    pub max_crashes: usize,
    /// How many times in a run a replica's store may be lost while it is down
    /// ([`KnowledgeModel`]; issue 18).
    pub disk_faults: usize,
    /// A deliberate bug.
    pub mutant: Option<Mutant>,
}

fn put(key: Key, value: Value) -> Edit<Key, Value> {
    Edit {
        key,
        value: Some(value),
    }
}

impl Default for KnowledgeConfig {
    /// The conflict scenario with at most one crash.
    fn default() -> Self {
        KnowledgeConfig::scenario(Scenario::Conflict)
    }
}

impl KnowledgeConfig {
    /// The config of `scenario`: loss-free duplicating network (see
    /// [`KnowledgeConfig::into_model`] on loss), at most one crash, destination wins.
    pub fn scenario(scenario: Scenario) -> KnowledgeConfig {
        let base = KnowledgeConfig {
            scenario,
            edits: vec![vec![], vec![]],
            pulls: vec![],
            filters: vec![None, None],
            purging: vec![],
            policy: ConflictPolicy::DestinationWins,
            two_way: false,
            advertise: false,
            cancel: false,
            sessions: 1,
            lossy: false,
            max_crashes: 1,
            disk_faults: 0,
            mutant: None,
        };
        match scenario {
            Scenario::Conflict => KnowledgeConfig {
                edits: vec![vec![put(0, 1)], vec![put(0, 2)]],
                pulls: vec![(0, 1), (1, 0)],
                ..base
            },
            Scenario::Recovery => KnowledgeConfig {
                edits: vec![
                    vec![
                        put(0, 1),
                        Edit {
                            key: 0,
                            value: None,
                        },
                    ],
                    vec![],
                ],
                pulls: vec![(1, 0)],
                purging: vec![0],
                sessions: 2,
                ..base
            },
            Scenario::Filtered => KnowledgeConfig {
                edits: vec![vec![put(0, 1), put(1, 2)], vec![]],
                pulls: vec![(1, 0)],
                filters: vec![None, Some(Filter::new([1]))],
                ..base
            },
            Scenario::Converge => KnowledgeConfig {
                edits: vec![vec![put(0, 1)], vec![put(1, 2)], vec![]],
                pulls: vec![(1, 0), (2, 1), (0, 2)],
                filters: vec![None, None, None],
                sessions: 2,
                max_crashes: 0,
                ..base
            },
        }
    }

    /// How many replicas.
    pub fn replicas(&self) -> usize {
        self.edits.len()
    }

    /// The config whose space decides every safety and reachability property of this one,
    /// exactly, and is smaller: the loss-free one. On an unordered duplicating network a
    /// delivered message stays deliverable and no message's presence disables an action, so
    /// every run with drops is matched by the run that never delivers those messages again,
    /// through the same replica states, storages and ghost; and the one property that reads
    /// the network (a message received again changes nothing) only has fewer messages to
    /// judge when some are dropped.
    pub fn safety_equivalent(&self) -> KnowledgeConfig {
        KnowledgeConfig {
            lossy: false,
            ..self.clone()
        }
    }

    /// Builds the actor model with every property that applies to this config.
    pub fn into_model(self) -> KnowledgeModel {
        let n = self.replicas();
        let actors = (0..n).map(|i| Replica {
            peers: self
                .pulls
                .iter()
                .filter(|(d, _)| *d == i)
                .map(|(_, s)| Id::from(*s))
                .collect(),
            advertise_to: if self.advertise {
                (0..n).filter(|j| *j != i).map(Id::from).collect()
            } else {
                vec![]
            },
            edits: self.edits[i].clone(),
            filter: self.filters.get(i).cloned().flatten(),
            policy: self.policy,
            two_way: self.two_way,
            cancel: self.cancel,
            purge: self.purging.contains(&i),
            max_sessions: self.sessions,
            incarnation: 0,
            mutant: self.mutant,
        });
        let ghost = Ghost {
            storage_faults_max: self.disk_faults,
            ..Ghost::default()
        };
        let system = ActorModel::new(self.clone(), ghost)
            .actors(actors)
            .init_network(Network::new_unordered_duplicating([]))
            .lossy_network(if self.lossy {
                LossyNetwork::Yes
            } else {
                LossyNetwork::No
            })
            .max_crashes(self.max_crashes)
            .record_msg_out(Ghost::record_out);
        let mut model = KnowledgeModel {
            system,
            properties: Vec::new(),
        };

        use props::*;
        model = model
            .property(Expectation::Always, KNOWLEDGE_SOUND, |_, s| {
                knowledge_sound(s)
            })
            .property(Expectation::Always, UNIQUE_IDS, |_, s| unique_ids(s))
            .property(Expectation::Always, UNIQUE_SESSIONS, |_, s| {
                !s.history.session_reused
            })
            .property(Expectation::Always, RECEIVED_AGAIN, |m, s| {
                received_again_changes_nothing(m, s)
            })
            .property(Expectation::Always, CONFLICTS_EXACT, |_, s| {
                !s.history.misjudged
            })
            .property(Expectation::Always, EQUAL_KNOWLEDGE_EQUAL_DATA, |_, s| {
                equal_knowledge_equal_data(s)
            })
            .property(Expectation::Always, CANCELLED_NOT_MERGED, |_, s| {
                s.history.cancelled.is_disjoint(&s.history.merged)
            });
        if self.has_concurrent_edits() {
            model = model.property(Expectation::Sometimes, REACH_CONFLICT, |_, s| {
                s.history.conflict_seen
            });
        }
        if self.filters.iter().any(Option::is_some) {
            model = model.property(Expectation::Sometimes, REACH_FILTERED, |_, s| {
                s.history
                    .merged
                    .iter()
                    .any(|m| s.history.filtered.contains(m))
            });
        }
        if !self.purging.is_empty() && self.sessions >= 2 {
            model = model.property(Expectation::Sometimes, REACH_RECOVERY, |_, s| {
                s.history
                    .merged
                    .iter()
                    .any(|m| s.history.recovery.contains(m))
            });
        }
        if self.cancel {
            model = model.property(Expectation::Sometimes, REACH_CANCEL, |_, s| {
                !s.history.cancelled.is_empty()
            });
        }
        if self.filters.iter().all(Option::is_none) && !self.pulls.is_empty() {
            model = model.property(Expectation::Sometimes, REACH_CONVERGED, |m, s| {
                all_converged(&m.cfg, s)
            });
            if self.disk_faults > 0 && self.max_crashes > 0 {
                model = model.property(Expectation::Sometimes, REACH_RECREATED, |m, s| {
                    s.history.storage_faults > 0 && all_converged(&m.cfg, s)
                });
            }
        }
        model
    }

    /// Whether two replicas write the same item.
    fn has_concurrent_edits(&self) -> bool {
        let writers = |k: Key| {
            self.edits
                .iter()
                .filter(|e| e.iter().any(|x| x.key == k))
                .count()
        };
        self.edits.iter().flatten().any(|e| writers(e.key) >= 2)
    }
}

impl fmt::Display for KnowledgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "knowledge-sync: scenario={} replicas={} policy={} sessions={} network={}duplicating crashes={} disk-faults={}{}{}{} mutant={}",
            self.scenario.name(),
            self.replicas(),
            self.policy.name(),
            self.sessions,
            if self.lossy { "lossy," } else { "" },
            self.max_crashes,
            self.disk_faults,
            if self.two_way { " two-way" } else { "" },
            if self.advertise { " advertise" } else { "" },
            if self.cancel { " cancel" } else { "" },
            self.mutant.map_or("none", Mutant::name),
        )
    }
}

/// The actors, network, crashes and ghost of [`KnowledgeModel`], as Stateright builds them.
pub type KnowledgeActors = ActorModel<Replica<Key, Value>, KnowledgeConfig, Ghost>;
/// A state of [`KnowledgeModel`].
pub type KnowledgeState = ActorModelState<Replica<Key, Value>, Ghost>;
/// A step of [`KnowledgeModel`]: one of Stateright's actor-model actions, or a lost store
/// ([`KnowledgeModel::storage_lost`]).
pub type KnowledgeAction = ActorModelAction<SyncMsg<Key, Value>, Timer, ()>;

/// The key of the action that stands for a lost store (see [`KnowledgeModel::storage_lost`]).
pub const STORAGE_LOST: &str = "storage lost";

/// The checked system of protocol 3, built by [`KnowledgeConfig::into_model`]: Stateright's
/// actor model ([`KnowledgeActors`]) plus the storage fault of issue 18 that it cannot
/// express: while a replica is down, its store may be lost, at most
/// [`KnowledgeConfig::disk_faults`] times in a run. The replica is then created again, as
/// `--init` creates it on an empty directory: its store is [`ReplicaData::created`] as a new
/// incarnation (the `k`-th loss of the run makes incarnation `k`; the runtime draws one at
/// random), and its next recovery runs its own `on_start` on it.
///
/// A damaged store is not modelled for protocol 3: the runtime refuses to start a replica
/// whose store fails its checks (`docs/reliability.md`), and the operator creates it again,
/// which is this fault.
///
/// It derefs to the actor model, so `model.cfg` and `model.actors` read as before.
#[derive(Clone)]
pub struct KnowledgeModel {
    /// The actors, network, crashes and ghost.
    pub system: KnowledgeActors,
    properties: Vec<Property<KnowledgeModel>>,
}

impl std::ops::Deref for KnowledgeModel {
    type Target = KnowledgeActors;
    fn deref(&self) -> &KnowledgeActors {
        &self.system
    }
}

impl KnowledgeModel {
    /// Adds a property.
    pub fn property(
        mut self,
        expectation: Expectation,
        name: &'static str,
        condition: fn(&KnowledgeModel, &KnowledgeState) -> bool,
    ) -> Self {
        self.properties.push(Property {
            expectation,
            name,
            condition,
        });
        self
    }

    /// The action that stands for the loss of replica `id`'s store. Stateright's actions have
    /// no storage fault, so the model uses its random-selection action under
    /// [`STORAGE_LOST`] as key; no replica ever asks for a random choice, so the two never
    /// meet.
    pub fn storage_lost(id: Id) -> KnowledgeAction {
        ActorModelAction::SelectRandom {
            actor: id,
            key: STORAGE_LOST.to_string(),
            random: (),
        }
    }

    /// The replica whose store `action` loses, if it stands for a loss.
    pub fn lost_store(action: &KnowledgeAction) -> Option<Id> {
        match action {
            ActorModelAction::SelectRandom { actor, key, .. } if key == STORAGE_LOST => {
                Some(*actor)
            }
            _ => None,
        }
    }

    /// The replicas whose store may be lost in `s`: each one down with something saved,
    /// while the run's bound allows one more loss.
    fn faults(&self, s: &KnowledgeState) -> Vec<Id> {
        if s.history.storage_faults >= self.cfg.disk_faults {
            return Vec::new();
        }
        (0..self.cfg.replicas())
            .filter(|i| s.crashed[*i] && s.actor_storages[*i].is_some())
            .map(Id::from)
            .collect()
    }
}

impl Model for KnowledgeModel {
    type State = KnowledgeState;
    type Action = KnowledgeAction;

    fn init_states(&self) -> Vec<Self::State> {
        self.system.init_states()
    }

    fn actions(&self, state: &Self::State, actions: &mut Vec<Self::Action>) {
        self.system.actions(state, actions);
        actions.extend(self.faults(state).into_iter().map(Self::storage_lost));
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let Some(id) = Self::lost_store(&action) else {
            return self.system.next_state(last, action);
        };
        if !self.faults(last).contains(&id) {
            return None;
        }
        let mut next = last.clone();
        next.history.storage_faults += 1;
        let incarnation = next.history.storage_faults as u32;
        next.actor_storages[usize::from(id)] = Some(ReplicaData::created(incarnation));
        Some(next)
    }

    fn format_action(&self, action: &Self::Action) -> String {
        match Self::lost_store(action) {
            Some(id) => format!("replica {id}: {STORAGE_LOST}, created again"),
            None => self.system.format_action(action),
        }
    }

    fn format_step(&self, last: &Self::State, action: Self::Action) -> Option<String> {
        match Self::lost_store(&action) {
            Some(_) => {
                let text = self.format_action(&action);
                self.next_state(last, action).map(|_| text)
            }
            None => self.system.format_step(last, action),
        }
    }

    fn as_svg(&self, path: Path<Self::State, Self::Action>) -> Option<String> {
        // Stateright's drawing knows no storage fault; a path with one is not drawn.
        let steps = path.clone().into_vec();
        if steps
            .iter()
            .any(|(_, a)| a.as_ref().is_some_and(|a| Self::lost_store(a).is_some()))
        {
            return None;
        }
        self.system.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties.clone()
    }

    fn within_boundary(&self, state: &Self::State) -> bool {
        Model::within_boundary(&self.system, state)
    }
}

/// Ghost state for the properties, reconstructed from the messages replicas sent. It is
/// never read by protocol logic.
#[derive(Clone, Debug, Default, Eq, Hash, PartialEq)]
pub struct Ghost {
    /// Every change seen in a message, by id (its first copy).
    pub changes: BTreeMap<ChangeId, ModelChange>,
    /// Two different changes were seen under one id.
    pub id_reused: bool,
    /// A destination acknowledged a change with an outcome that contradicts the causal order
    /// of the changes, as the ghost reconstructs it transitively.
    pub misjudged: bool,
    /// A destination reported a conflict.
    pub conflict_seen: bool,
    /// (destination, session) of every cancelled or refused sync.
    pub cancelled: BTreeSet<(usize, u64)>,
    /// (destination, session) of every sync whose learned knowledge was merged.
    pub merged: BTreeSet<(usize, u64)>,
    /// (destination, session) of every filtered request.
    pub filtered: BTreeSet<(usize, u64)>,
    /// (destination, session) of every full-enumeration request.
    pub recovery: BTreeSet<(usize, u64)>,
    /// Per destination, the last session number it sent a request under.
    pub sessions: BTreeMap<usize, u64>,
    /// A destination sent a request under a session number it had used before.
    pub session_reused: bool,
    /// How many stores were lost so far ([`KnowledgeModel`]).
    pub storage_faults: usize,
    /// How many may be lost in the run ([`KnowledgeConfig::disk_faults`]), for
    /// [`is_dead`]: a lost store forgets what its replica answered.
    pub storage_faults_max: usize,
}

impl Ghost {
    fn see(&mut self, change: &ModelChange) {
        match self.changes.get(&change.id) {
            Some(known) if known != change => self.id_reused = true,
            Some(_) => {}
            None => {
                self.changes.insert(change.id, change.clone());
            }
        }
    }

    /// Whether `a` happened before `b`: `a` is in `b`'s made-with knowledge or, transitively,
    /// in that of a change `b` was made knowing.
    pub fn happened_before(&self, a: ChangeId, b: &ModelChange) -> bool {
        let mut seen: BTreeSet<ChangeId> = BTreeSet::new();
        let mut todo: Vec<&Knowledge> = vec![&b.made_with];
        while let Some(k) = todo.pop() {
            if k.contains(a) {
                return true;
            }
            for id in k.ids() {
                if seen.insert(id)
                    && let Some(c) = self.changes.get(&id)
                {
                    todo.push(&c.made_with);
                }
            }
        }
        false
    }

    fn record_out(
        _cfg: &KnowledgeConfig,
        ghost: &Self,
        env: Envelope<&SyncMsg<Key, Value>>,
    ) -> Option<Self> {
        let mut g = ghost.clone();
        let src = usize::from(env.src);
        match env.msg {
            SyncMsg::ConveyChanges { change, .. } => g.see(change),
            SyncMsg::AcknowledgeChange { id, outcome, .. } => {
                let change = g.changes.get(id).cloned()?;
                match outcome {
                    Applied::Applied { replaced: Some(l) } => {
                        g.misjudged |= !g.happened_before(*l, &change);
                    }
                    Applied::Applied { replaced: None } => {}
                    Applied::Obsolete { by } => {
                        g.see(by);
                        g.misjudged |= !g.happened_before(change.id, by);
                    }
                    Applied::Conflict { local, .. } => {
                        g.see(local);
                        g.conflict_seen = true;
                        g.misjudged |= local.id == change.id
                            || g.happened_before(local.id, &change)
                            || g.happened_before(change.id, local);
                    }
                }
            }
            SyncMsg::CancelChangeFlow { session } => {
                g.cancelled.insert((src, *session));
            }
            SyncMsg::ConveyKnowledge { session, .. } => {
                g.merged.insert((src, *session));
            }
            SyncMsg::RequestChanges {
                session,
                filter,
                recovery,
                ..
            } => {
                if filter.is_some() {
                    g.filtered.insert((src, *session));
                }
                if *recovery {
                    g.recovery.insert((src, *session));
                }
                match g.sessions.get(&src) {
                    Some(last) if last >= session => g.session_reused = true,
                    _ => {
                        g.sessions.insert(src, *session);
                    }
                }
            }
            SyncMsg::CompleteBundle { .. } | SyncMsg::AdvertiseChanges { .. } => return None,
        }
        (g != *ghost).then_some(g)
    }
}

/// The property names and predicates of protocol 3. Each predicate is a plain function of a
/// model state, so tests and the checker call the same code.
pub mod props {
    use super::*;

    /// Knowledge never claims a change the replica has not applied.
    pub const KNOWLEDGE_SOUND: &str = "knowledge never claims a change the replica has not applied";
    /// Change ids are unique and counters increase across crash-restart.
    pub const UNIQUE_IDS: &str = "change ids are unique and counters increase across crash-restart";
    /// Session numbers are never reused: what [`super::is_dead`] assumes, checked as it runs.
    pub const UNIQUE_SESSIONS: &str =
        "a replica never sends a request under a session number it used before";
    /// Applying a bundle twice (or a change again) changes nothing.
    pub const RECEIVED_AGAIN: &str = "a change or bundle received again changes nothing";
    /// Conflicts are reported exactly when updates are concurrent.
    pub const CONFLICTS_EXACT: &str = "conflicts are reported exactly when updates are concurrent";
    /// Replicas that know the same changes hold the same data.
    pub const EQUAL_KNOWLEDGE_EQUAL_DATA: &str =
        "replicas with equal knowledge and no kept conflict hold equal data";
    /// A cancelled sync merges no learned knowledge.
    pub const CANCELLED_NOT_MERGED: &str =
        "a cancelled or refused sync merges no learned knowledge";
    /// Reachability.
    pub const REACH_CONFLICT: &str = "a conflict is detected";
    /// Reachability.
    pub const REACH_FILTERED: &str = "a filtered sync completes";
    /// Reachability.
    pub const REACH_RECOVERY: &str = "a replica recovers by full enumeration";
    /// Reachability.
    pub const REACH_CANCEL: &str = "a sync is cancelled";
    /// Reachability.
    pub const REACH_CONVERGED: &str =
        "every replica made its edits and all hold equal knowledge and data";
    /// Reachability.
    pub const REACH_RECREATED: &str =
        "a store was lost, and every replica, the one created again too, converged after it";

    /// Every live replica's state, with its index.
    pub fn live(s: &KnowledgeState) -> impl Iterator<Item = (usize, &ReplicaState<Key, Value>)> {
        s.actor_states
            .iter()
            .enumerate()
            .filter(|(i, _)| !s.crashed[*i])
            .map(|(i, a)| (i, &**a))
    }

    /// Every change that exists: in a message so far, or held by a replica (live or saved).
    fn universe(s: &KnowledgeState) -> BTreeMap<ChangeId, &ModelChange> {
        let mut all: BTreeMap<ChangeId, &ModelChange> =
            s.history.changes.iter().map(|(k, v)| (*k, v)).collect();
        for (i, a) in s.actor_states.iter().enumerate() {
            let datas = std::iter::once(&a.data).chain(s.actor_storages[i].as_ref());
            for d in datas {
                for c in d.items.values().chain(d.conflicts.iter()) {
                    all.entry(c.id).or_insert(c);
                }
            }
        }
        all
    }

    /// Whether `d` holds a version of `c`'s item that is `c` or superseded it, or forgot it.
    pub fn covers<K: Payload, V: Payload>(d: &ReplicaData<K, V>, c: &Change<K, V>) -> bool {
        d.forgotten.contains(c.id)
            || d.versions(&c.key)
                .any(|v| v.id == c.id || v.made_with.contains(c.id))
    }

    /// For every live replica and every change it claims to know, it holds that change or a
    /// version that superseded it, or forgot it with a tombstone.
    pub fn knowledge_sound(s: &KnowledgeState) -> bool {
        let all = universe(s);
        live(s).all(|(_, r)| sound_against(&all, &r.data))
    }

    /// Whether every change of `all` that `d` claims to know is covered by `d`.
    pub fn sound_against<K: Payload, V: Payload>(
        all: &BTreeMap<ChangeId, &Change<K, V>>,
        d: &ReplicaData<K, V>,
    ) -> bool {
        all.values().all(|c| !d.knows(c.id, &c.key) || covers(d, c))
    }

    /// [`knowledge_sound`] of these replicas' data (of any key and value types: the
    /// runtime's too), against every change any of them holds.
    pub fn knowledge_sound_of<K: Payload, V: Payload>(datas: &[&ReplicaData<K, V>]) -> bool {
        let all = changes_in(datas.iter().copied());
        datas.iter().all(|d| sound_against(&all, d))
    }

    /// Every change these replicas' data hold (items and kept conflicts), by id.
    pub fn changes_in<'a, K: Payload, V: Payload>(
        datas: impl IntoIterator<Item = &'a ReplicaData<K, V>>,
    ) -> BTreeMap<ChangeId, &'a Change<K, V>> {
        let mut all = BTreeMap::new();
        for d in datas {
            for c in d.items.values().chain(d.conflicts.iter()) {
                all.entry(c.id).or_insert(c);
            }
        }
        all
    }

    /// No two different changes share an id, and every live replica's counter is at least
    /// every counter of its own changes it knows (so its next id is new).
    pub fn unique_ids(s: &KnowledgeState) -> bool {
        !s.history.id_reused && live(s).all(|(i, r)| counter_ahead(i as u64, &r.data))
    }

    /// Whether replica `id`'s counter is at least every counter of the changes it knows that
    /// it made with this store (in its incarnation).
    pub fn counter_ahead<K: Payload, V: Payload>(id: u64, d: &ReplicaData<K, V>) -> bool {
        d.counter >= d.knowledge.max_counter(d.maker(id))
    }

    /// For every live replica, delivering again any sync message it has already taken (a
    /// change of a bundle it applied, a complete-bundle message it holds or of a sync it
    /// closed) changes nothing and sends nothing.
    pub fn received_again_changes_nothing(m: &KnowledgeModel, s: &KnowledgeState) -> bool {
        s.network.iter_deliverable().all(|env| {
            let i = usize::from(env.dst);
            if s.crashed[i] {
                return true;
            }
            let state = &*s.actor_states[i];
            let open = state
                .pull
                .as_ref()
                .filter(|p| p.source == usize::from(env.src));
            let taken = match env.msg {
                SyncMsg::ConveyChanges { session, seq, .. } => match open {
                    Some(p) if p.session == *session => p.applied.contains(seq),
                    _ => *session <= state.data.sessions,
                },
                SyncMsg::CompleteBundle { session, .. } => match open {
                    Some(p) if p.session == *session => p.complete.is_some(),
                    _ => *session <= state.data.sessions,
                },
                SyncMsg::RequestChanges { session, .. } => state
                    .data
                    .answered
                    .get(&requester(env.src, *session))
                    .is_some_and(|a| a >= session),
                _ => false,
            };
            if !taken {
                return true;
            }
            let mut cow = Cow::Borrowed(state);
            let mut out = Out::new();
            m.actors[i].on_msg(Id::from(i), &mut cow, env.src, env.msg.clone(), &mut out);
            *cow == *state && out.is_empty()
        })
    }

    /// Live replicas that know the same changes (with the same filtered knowledge) and keep no
    /// conflict for the application hold the same values.
    pub fn equal_knowledge_equal_data(s: &KnowledgeState) -> bool {
        equal_knowledge_equal_data_of(&live(s).map(|(_, r)| &r.data).collect::<Vec<_>>())
    }

    /// [`equal_knowledge_equal_data`] of these replicas' data.
    pub fn equal_knowledge_equal_data_of<K: Payload, V: Payload>(
        datas: &[&ReplicaData<K, V>],
    ) -> bool {
        let rs: Vec<_> = datas.iter().filter(|d| d.conflicts.is_empty()).collect();
        rs.iter().all(|a| {
            rs.iter().all(|b| {
                a.knowledge != b.knowledge || a.filtered != b.filtered || a.values() == b.values()
            })
        })
    }

    /// Every replica is up, made all its edits, and all hold equal knowledge and values.
    pub fn all_converged(cfg: &KnowledgeConfig, s: &KnowledgeState) -> bool {
        if s.crashed.iter().any(|c| *c) {
            return false;
        }
        let first = &s.actor_states[0].data;
        s.actor_states.iter().enumerate().all(|(i, a)| {
            a.data.next_edit as usize == cfg.edits[i].len()
                && a.data.knowledge == first.knowledge
                && a.data.values() == first.values()
        })
    }

    /// Every property's stable id (for `--json` and scripts), beside its prose name: an id
    /// never changes once published, the prose may.
    pub const IDS: &[(&str, &str)] = &[
        ("knowledge-sound", KNOWLEDGE_SOUND),
        ("unique-ids", UNIQUE_IDS),
        ("unique-sessions", UNIQUE_SESSIONS),
        ("received-again", RECEIVED_AGAIN),
        ("conflicts-exact", CONFLICTS_EXACT),
        ("equal-knowledge-equal-data", EQUAL_KNOWLEDGE_EQUAL_DATA),
        ("cancelled-not-merged", CANCELLED_NOT_MERGED),
        ("reach-conflict", REACH_CONFLICT),
        ("reach-filtered", REACH_FILTERED),
        ("reach-recovery", REACH_RECOVERY),
        ("reach-cancel", REACH_CANCEL),
        ("reach-converged", REACH_CONVERGED),
        ("reach-recreated", REACH_RECREATED),
    ];
}

/// Whether delivering `env` is a no-op in this state and in every state reachable from it:
/// the source ignores acknowledgements, cancels and conveyed knowledge; a replica answers a
/// session of a destination once (saved); and a change or complete-bundle message counts only
/// for the open sync with its session and source, which never reopens once closed (session
/// numbers are saved and only grow, also across a lost store: a new incarnation numbers its
/// sessions above the old ones; the property [`props::UNIQUE_SESSIONS`] checks it on every
/// run), only once, and only from the incarnation of the source it first took a message of.
/// A request answered is dead only while no store can be lost any more: a source whose
/// store is lost forgets what it answered, and answers a duplicate again (with the bundle
/// of its new incarnation, which the destination's open sync then ignores).
pub fn is_dead(s: &KnowledgeState, env: &Envelope<SyncMsg<Key, Value>>) -> bool {
    let dst = usize::from(env.dst);
    let src = usize::from(env.src);
    let state = &*s.actor_states[dst];
    let open = (!s.crashed[dst])
        .then_some(state.pull.as_ref())
        .flatten()
        .filter(|p| p.source == src);
    match &env.msg {
        SyncMsg::AcknowledgeChange { .. }
        | SyncMsg::CancelChangeFlow { .. }
        | SyncMsg::ConveyKnowledge { .. } => true,
        SyncMsg::AdvertiseChanges { .. } => false,
        SyncMsg::RequestChanges { .. }
            if s.history.storage_faults < s.history.storage_faults_max =>
        {
            false
        }
        SyncMsg::RequestChanges { session, .. } => {
            let from = requester(env.src, *session);
            let answered =
                |d: &ReplicaData<Key, Value>| d.answered.get(&from).copied().unwrap_or(0);
            let saved = s.actor_storages[dst].as_ref().map_or(0, answered);
            *session <= answered(&state.data).min(saved)
        }
        SyncMsg::ConveyChanges {
            session,
            source,
            seq,
            ..
        } => open.is_none_or(|p| {
            p.session != *session
                || p.applied.contains(seq)
                || p.maker.is_some_and(|m| m != *source)
        }),
        SyncMsg::CompleteBundle {
            session, source, ..
        } => open.is_none_or(|p| {
            p.session != *session || p.complete.is_some() || p.maker.is_some_and(|m| m != *source)
        }),
    }
}

/// The state with its dead messages (see [`is_dead`]) and the duplicating network's record
/// of the last delivered message forgotten: states that differ only there behave alike. Used
/// as DFS's symmetry function (there is no symmetry among replicas: their scripts differ).
pub fn representative(s: &KnowledgeState) -> KnowledgeState {
    let mut r = s.clone();
    r.network = Network::new_unordered_duplicating(
        s.network
            .iter_deliverable()
            .map(|e| e.to_cloned_msg())
            .filter(|env| !is_dead(s, env)),
    );
    r
}
