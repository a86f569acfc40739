//! The checked system of protocol 1: one master, N slaves and a scripted client under a
//! configurable network and crash bound; the ghost history the properties read; the
//! properties; and symmetry over slaves.
//!
//! Actor ids: the master is 0, slaves are `1..=N`, the client is `N + 1`.

use super::client::{ClientState, ScriptClient, ScriptStep, UpdateKind};
use super::master::{MasterServer, MasterState};
use super::master_user::Step;
use super::msg::{AbortReason, Beat, ClientMsg, Msg, Outcome, ServiceMsg};
use super::slave::{SlaveServer, SlaveState};
use super::{Mutant, Saved};
use crate::store::{KvOp, ModelKv, Store, Version};
use stateright::actor::{
    Actor, ActorModel, ActorModelState, Envelope, Id, LossyNetwork, Network, Out,
};
use stateright::{Expectation, Rewrite, RewritePlan};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The network semantics the checker explores (SPEC "Fault model").
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum NetworkKind {
    /// Unordered; a sent message may be delivered any number of times (a set).
    UnorderedDuplicating,
    /// Unordered; each sent copy is delivered at most once (a multiset).
    UnorderedNonDuplicating,
    /// FIFO per directed link, like TCP.
    Ordered,
}

impl NetworkKind {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::UnorderedDuplicating => "duplicating",
            NetworkKind::UnorderedNonDuplicating => "nonduplicating",
            NetworkKind::Ordered => "ordered",
        }
    }
}

impl FromStr for NetworkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "duplicating" => Ok(NetworkKind::UnorderedDuplicating),
            "nonduplicating" => Ok(NetworkKind::UnorderedNonDuplicating),
            "ordered" => Ok(NetworkKind::Ordered),
            _ => Err(format!(
                "unknown network '{s}' (expected duplicating, nonduplicating or ordered)"
            )),
        }
    }
}

/// Parses a compact script: comma-separated `1p` (one-phase), `2p` (two-phase) and `rb`
/// (a two-phase update rolled back at once). Update `i` puts value `i + 1` at key `i % 2`,
/// so every committed state differs from the one before it. Panics on a bad script; use
/// [`try_script`] on user input.
pub fn script(s: &str) -> Vec<ScriptStep<ModelKv>> {
    try_script(s).expect("a valid built-in script")
}

/// Parses a compact script (see [`script`]).
pub fn try_script(s: &str) -> Result<Vec<ScriptStep<ModelKv>>, String> {
    let items: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if items.len() > 16 {
        return Err(format!(
            "script has {} updates; at most 16 are supported",
            items.len()
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let kind = match *item {
                "1p" => UpdateKind::OnePhase,
                "2p" => UpdateKind::TwoPhase,
                "rb" => UpdateKind::RolledBack,
                other => {
                    return Err(format!(
                        "unknown script item '{other}' (expected 1p, 2p or rb)"
                    ));
                }
            };
            Ok(ScriptStep {
                op: KvOp::Put((i % 2) as u8, i as u8 + 1),
                kind,
            })
        })
        .collect()
}

/// Formats a script back into its compact form.
pub fn script_text(script: &[ScriptStep<ModelKv>]) -> String {
    script
        .iter()
        .map(|s| match s.kind {
            UpdateKind::OnePhase => "1p",
            UpdateKind::TwoPhase => "2p",
            UpdateKind::RolledBack => "rb",
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A model configuration of protocol 1; [`MasterSlaveConfig::into_model`] builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterSlaveConfig {
    /// How many slave servers.
    pub slaves: usize,
    /// Each client's updates (client `c` puts values shifted by `16 c`, so clients' changes
    /// differ).
    pub script: Vec<ScriptStep<ModelKv>>,
    /// How many scripted clients run the script concurrently. Three or more let two-phase
    /// requests queue behind a round and share the next one (group commit).
    pub clients: usize,
    /// The network semantics.
    pub network: NetworkKind,
    /// Whether messages can be lost.
    pub lossy: bool,
    /// How many servers may be down at the same time.
    pub max_crashes: usize,
    /// How many committed steps the master remembers for deltas.
    pub history_bound: usize,
    /// A deliberate bug.
    pub mutant: Option<Mutant>,
}

impl Default for MasterSlaveConfig {
    /// The default config (issue "core"): 1 master, 2 slaves, a one-phase update, a
    /// two-phase update and a rolled-back two-phase update, over a lossy duplicating
    /// reordering network with at most 1 crash, and a history of 1 step so that catch-up by
    /// snapshot is reachable.
    fn default() -> Self {
        MasterSlaveConfig {
            slaves: 2,
            script: script("1p,2p,rb"),
            clients: 1,
            network: NetworkKind::UnorderedDuplicating,
            lossy: true,
            max_crashes: 1,
            history_bound: 1,
            mutant: None,
        }
    }
}

impl fmt::Display for MasterSlaveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "master-slave: slaves={} script={}{} network={}{} crashes={} history={} mutant={}",
            self.slaves,
            script_text(&self.script),
            if self.clients == 1 {
                String::new()
            } else {
                format!(" clients={}", self.clients)
            },
            if self.lossy { "lossy," } else { "" },
            self.network.name(),
            self.max_crashes,
            self.history_bound,
            self.mutant.map_or("none", Mutant::name),
        )
    }
}

/// The model type built by [`MasterSlaveConfig::into_model`].
pub type MasterSlaveModel = ActorModel<Node<ModelKv>, MasterSlaveConfig, Ghost<ModelKv>>;
/// A state of [`MasterSlaveModel`].
pub type MasterSlaveState = ActorModelState<Node<ModelKv>, Ghost<ModelKv>>;

impl MasterSlaveConfig {
    /// The master's id.
    pub fn master_id(&self) -> Id {
        Id::from(0)
    }

    /// The slaves' ids.
    pub fn slave_ids(&self) -> Vec<Id> {
        (1..=self.slaves).map(Id::from).collect()
    }

    /// The most messages in flight explored on networks that keep every copy: two per
    /// actor.
    pub fn in_flight_bound(&self) -> usize {
        2 * (self.slaves + 1 + self.clients)
    }

    /// The first client's id.
    pub fn client_id(&self) -> Id {
        Id::from(self.slaves + 1)
    }

    /// Every client's id: after the slaves.
    pub fn client_ids(&self) -> Vec<Id> {
        (self.slaves + 1..=self.slaves + self.clients)
            .map(Id::from)
            .collect()
    }

    /// Client `c`'s script: the script with values shifted by `16 c`.
    pub fn client_script(&self, c: usize) -> Vec<ScriptStep<ModelKv>> {
        self.script
            .iter()
            .map(|step| ScriptStep {
                op: match step.op {
                    KvOp::Put(k, v) => KvOp::Put(k, v.wrapping_add((16 * c) as u8)),
                    ref other => other.clone(),
                },
                kind: step.kind,
            })
            .collect()
    }

    fn has(&self, kind: UpdateKind) -> bool {
        self.script.iter().any(|s| s.kind == kind)
    }

    /// The config whose state space decides every safety and reachability property of
    /// this one, exactly, and is smaller.
    ///
    /// On an unordered duplicating network, message loss cannot change whether a safety or
    /// reachability property holds: a delivered message stays deliverable, a message's
    /// presence never disables another action, and no property reads the network. Every run
    /// with drops is therefore matched, step for step, by the run that omits the drops and
    /// simply never delivers those messages again; it reaches the same actor states,
    /// storages and ghost history. So the lossy space and the loss-free space satisfy the same
    /// `Always`/`Sometimes` properties, and the loss-free one is far smaller (no subsets of
    /// dropped messages). Liveness is different: it needs loss, and is checked on the
    /// config itself.
    pub fn safety_equivalent(&self) -> MasterSlaveConfig {
        let mut cfg = self.clone();
        if cfg.network == NetworkKind::UnorderedDuplicating {
            cfg.lossy = false;
        }
        cfg
    }

    /// Builds the actor model with every property that applies to this config.
    pub fn into_model(self) -> MasterSlaveModel {
        let master = self.master_id();
        let slaves = self.slave_ids();
        let tick = Duration::from_millis(10)..Duration::from_millis(20);
        let mut model = ActorModel::new(self.clone(), Ghost::default())
            .actor(Node::Master(MasterServer {
                slaves: slaves.clone(),
                history_bound: self.history_bound,
                heartbeat: tick.clone(),
                mutant: self.mutant,
                store: PhantomData,
            }))
            .actors(slaves.iter().map(|_| {
                Node::Slave(SlaveServer {
                    master,
                    mutant: self.mutant,
                    store: PhantomData,
                })
            }))
            .actors((0..self.clients).map(|c| {
                Node::Client(ScriptClient {
                    master,
                    script: self.client_script(c),
                    timeout_ms: 100,
                    retry: tick.clone(),
                })
            }))
            .init_network(match self.network {
                NetworkKind::UnorderedDuplicating => Network::new_unordered_duplicating([]),
                NetworkKind::UnorderedNonDuplicating => Network::new_unordered_nonduplicating([]),
                NetworkKind::Ordered => Network::new_ordered([]),
            })
            .lossy_network(if self.lossy {
                LossyNetwork::Yes
            } else {
                LossyNetwork::No
            })
            .max_crashes(self.max_crashes)
            .record_msg_out(Ghost::record_out)
            .record_msg_in(Ghost::record_in)
            // Clients are not servers of the fault model: they never crash. On networks
            // that keep every copy (non-duplicating, ordered), timers re-send into a growing
            // multiset, so the search is bounded by messages in flight.
            .within_boundary(|cfg, state| {
                cfg.client_ids()
                    .iter()
                    .all(|c| !state.crashed[usize::from(*c)])
                    && (cfg.network == NetworkKind::UnorderedDuplicating
                        || state.network.len() <= cfg.in_flight_bound())
            });

        use props::*;
        model = model
            .property(Expectation::Always, SLAVE_DATA, |_, s| slave_data(s))
            .property(Expectation::Always, NO_ABORTED_VISIBLE, |_, s| {
                no_aborted_visible(s)
            })
            .property(Expectation::Always, AGREEMENT, |_, s| agreement(s))
            .property(Expectation::Always, COMMIT_VALIDITY, |_, s| {
                commit_validity(s)
            })
            .property(Expectation::Always, UNIQUE_VERSIONS, |_, s| {
                unique_versions(s)
            })
            .property(Expectation::Always, MONOTONIC, |_, s| monotonic(s))
            .property(Expectation::Always, DURABLE_VOTES, |_, s| durable_votes(s));
        if self.max_crashes == 0 {
            // With crashes allowed no state is terminal (a crash is always possible), so
            // Stateright's `Eventually` would pass vacuously: it is only added where it can
            // fail. [`crate::liveness`] covers every config.
            model = model.property(Expectation::Eventually, CONVERGES, |m, s| {
                converged(&m.cfg, s)
            });
        }
        if self.has(UpdateKind::TwoPhase) || self.has(UpdateKind::RolledBack) {
            model = model
                .property(Expectation::Sometimes, REACH_TWO_PHASE_COMMIT, |m, s| {
                    two_phase_commit_everywhere(&m.cfg, s)
                })
                .property(Expectation::Sometimes, REACH_ABORT, |_, s| {
                    !s.history.aborted.is_empty()
                });
        }
        if self.clients >= 3 && self.has(UpdateKind::TwoPhase) {
            model = model.property(Expectation::Sometimes, REACH_GROUP_COMMIT, |_, s| {
                s.history.group_committed
            });
        }
        if self.has(UpdateKind::RolledBack) {
            model = model.property(Expectation::Sometimes, REACH_ROLLBACK, |_, s| {
                s.history.rolled_back
            });
        }
        if self.script.len() >= 2 {
            model = model.property(Expectation::Sometimes, REACH_DELTA, |_, s| {
                s.history.delta_applied
            });
            // A slave needs a version the master no longer remembers: after a master restart
            // (history is not saved), or behind a one-phase update past the history bound (a
            // two-phase update waits for every slave, so it never leaves one two behind).
            let pruned = self
                .script
                .iter()
                .skip(self.history_bound)
                .any(|s| s.kind == UpdateKind::OnePhase);
            if self.max_crashes > 0 || pruned {
                model = model.property(Expectation::Sometimes, REACH_SNAPSHOT, |_, s| {
                    s.history.snapshot_applied
                });
            }
        }
        if self.max_crashes > 0 {
            model = model.property(Expectation::Sometimes, REACH_RECOVERY, |m, s| {
                recovered_and_converged(&m.cfg, s)
            });
        }
        model
    }
}

/// Ghost state for the properties: what the master revealed and decided, reconstructed from
/// the messages it sent. It is never read by protocol logic.
///
/// The record ([`GhostHistory`]) is shared and copied on write: the checker clones the whole
/// state for every successor it builds, and most steps leave the record as it was.
#[derive(Clone, Debug, Default, Eq, Hash, PartialEq)]
pub struct Ghost<S: Store>(Arc<GhostHistory<S>>);

impl<S: Store> std::ops::Deref for Ghost<S> {
    type Target = GhostHistory<S>;
    fn deref(&self) -> &GhostHistory<S> {
        &self.0
    }
}

impl<S: Store> std::ops::DerefMut for Ghost<S> {
    fn deref_mut(&mut self) -> &mut GhostHistory<S> {
        Arc::make_mut(&mut self.0)
    }
}

/// What [`Ghost`] records.
#[derive(Clone, Debug, Default, Eq, Hash, PartialEq)]
pub struct GhostHistory<S: Store> {
    /// Every committed state the master revealed, by version.
    pub committed: BTreeMap<Version, S>,
    /// Every two-phase step the master proposed, by version.
    pub proposed: BTreeMap<Version, Step<S>>,
    /// Versions the master decided to commit by two-phase commit.
    pub two_phase_commits: BTreeSet<Version>,
    /// Versions the master aborted (never to be visible).
    pub aborted: BTreeSet<Version>,
    /// (slave, version) for every Prepared vote a slave sent.
    pub voted: BTreeSet<(Id, Version)>,
    /// The master revealed two different states under one version.
    pub version_reused: bool,
    /// The master sent Commit for a version some participant had not voted Prepared.
    pub commit_without_votes: bool,
    /// A client was told its update was rolled back.
    pub rolled_back: bool,
    /// With several clients: the client first told each version was committed.
    pub replied: BTreeMap<Version, Id>,
    /// Two clients were told their updates committed as one version (group commit).
    pub group_committed: bool,
    /// A slave applied a Delta reply.
    pub delta_applied: bool,
    /// A slave applied a Snapshot reply.
    pub snapshot_applied: bool,
}

impl<S: Store> Rewrite<Id> for Ghost<S> {
    fn rewrite<P>(&self, plan: &RewritePlan<Id, P>) -> Self {
        let mut g = self.clone();
        g.voted = self
            .voted
            .iter()
            .map(|(id, v)| (plan.rewrite(id), *v))
            .collect();
        g.replied = self
            .replied
            .iter()
            .map(|(v, id)| (*v, plan.rewrite(id)))
            .collect();
        g
    }
}

// Every record below only adds, and writes only what is new: a write copies the shared
// record (see [`Ghost`]).
impl<S: Store> Ghost<S> {
    /// Records that the master revealed `data` as its committed state at `version`.
    fn reveal(&mut self, version: Version, data: S) {
        match self.committed.get(&version) {
            Some(known) if *known != data && !self.version_reused => self.version_reused = true,
            Some(_) => {}
            None => {
                self.committed.insert(version, data);
            }
        }
    }

    /// The committed state at `prior` followed by `delta`, if `prior` is known.
    fn after(&self, prior: Version, delta: &S::Delta) -> Option<S> {
        let mut data = if prior == 0 {
            S::default()
        } else {
            self.committed.get(&prior)?.clone()
        };
        data.apply(delta);
        Some(data)
    }

    fn abort(&mut self, version: Version) {
        if !self.aborted.contains(&version) {
            self.aborted.insert(version);
        }
    }

    fn reveal_two_phase(&mut self, cfg: &MasterSlaveConfig, version: Version) {
        if !cfg
            .slave_ids()
            .iter()
            .all(|id| self.voted.contains(&(*id, version)))
            && !self.commit_without_votes
        {
            self.commit_without_votes = true;
        }
        if !self.two_phase_commits.contains(&version) {
            self.two_phase_commits.insert(version);
        }
        if let Some(step) = self.proposed.get(&version).cloned()
            && let Some(data) = self.after(step.prior, &step.delta)
        {
            self.reveal(version, data);
        }
    }

    fn record_out(cfg: &MasterSlaveConfig, ghost: &Self, env: Envelope<&Msg<S>>) -> Option<Self> {
        let from_master = env.src == cfg.master_id();
        let mut g = ghost.clone();
        match env.msg {
            Msg::Service(m) if from_master => match m {
                ServiceMsg::Announce {
                    prior,
                    new,
                    delta: Some(delta),
                } => {
                    let data = g.after(*prior, delta)?;
                    g.reveal(*new, data);
                }
                ServiceMsg::Delta { from, to, delta } => {
                    let data = g.after(*from, delta)?;
                    g.reveal(*to, data);
                }
                ServiceMsg::Snapshot { to, data, .. } => g.reveal(*to, data.clone()),
                ServiceMsg::Prepare { prior, new, delta } => {
                    let step = Step {
                        prior: *prior,
                        new: *new,
                        delta: delta.clone(),
                    };
                    if g.proposed.get(new) != Some(&step) {
                        g.proposed.insert(*new, step);
                    }
                }
                ServiceMsg::Commit { version } => g.reveal_two_phase(cfg, *version),
                ServiceMsg::Abort { version } => g.abort(*version),
                ServiceMsg::Heartbeat(beat) => match beat.decision {
                    Some(d) if d.outcome == Outcome::Commit => g.reveal_two_phase(cfg, d.version),
                    Some(d) => g.abort(d.version),
                    None => return None,
                },
                _ => return None,
            },
            Msg::Service(ServiceMsg::Prepared { version }) => {
                if !g.voted.contains(&(env.src, *version)) {
                    g.voted.insert((env.src, *version));
                }
            }
            Msg::Client(ClientMsg::Committed { version, .. }) if from_master && cfg.clients > 1 => {
                match g.replied.get(version) {
                    Some(first) if *first != env.dst && !g.group_committed => {
                        g.group_committed = true
                    }
                    Some(_) => {}
                    None => {
                        g.replied.insert(*version, env.dst);
                    }
                }
            }
            Msg::Client(ClientMsg::Aborted {
                version, reason, ..
            }) if from_master => {
                g.abort(*version);
                if *reason == AbortReason::RolledBack && !g.rolled_back {
                    g.rolled_back = true;
                }
            }
            _ => return None,
        }
        (g != *ghost).then_some(g)
    }

    fn record_in(_cfg: &MasterSlaveConfig, ghost: &Self, env: Envelope<&Msg<S>>) -> Option<Self> {
        // A Delta or Snapshot delivery is only a transition when the slave applied it.
        let mut g = ghost.clone();
        match env.msg {
            Msg::Service(ServiceMsg::Delta { .. }) if !ghost.delta_applied => {
                g.delta_applied = true
            }
            Msg::Service(ServiceMsg::Snapshot { .. }) if !ghost.snapshot_applied => {
                g.snapshot_applied = true
            }
            _ => return None,
        }
        Some(g)
    }
}

/// The actors of the checked system.
#[derive(Clone, Debug)]
pub enum Node<S: Store> {
    /// The master server.
    Master(MasterServer<S>),
    /// A slave server.
    Slave(SlaveServer<S>),
    /// The scripted client.
    Client(ScriptClient<S>),
}

/// The state of one actor of the checked system.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum NodeState<S: Store> {
    /// The master's.
    Master(MasterState<S>),
    /// A slave's.
    Slave(SlaveState<S>),
    /// The client's.
    Client(ClientState),
}

impl<S: Store> Rewrite<Id> for NodeState<S> {
    fn rewrite<P>(&self, plan: &RewritePlan<Id, P>) -> Self {
        match self {
            NodeState::Master(s) => NodeState::Master(s.rewrite(plan)),
            NodeState::Slave(s) => NodeState::Slave(s.rewrite(plan)),
            NodeState::Client(s) => NodeState::Client(s.rewrite(plan)),
        }
    }
}

/// Runs one step of an inner actor on the matching variant of a [`NodeState`], keeping the
/// state borrowed unless the inner actor changed it (so no-op steps stay visible to the
/// checker and nothing is cloned).
macro_rules! delegate {
    ($state:ident, $o:ident, $variant:ident, $inner:ident, |$st:ident, $out:ident| $call:expr) => {{
        let mut $st = Cow::Borrowed($inner);
        let mut $out = Out::new();
        $call;
        $o.append(&mut $out);
        if let Cow::Owned(next) = $st {
            *$state = Cow::Owned(NodeState::$variant(next));
        }
    }};
}

impl<S: Store> Actor for Node<S> {
    type Msg = Msg<S>;
    type State = NodeState<S>;
    type Timer = super::Timer;
    type Storage = Saved<S>;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        macro_rules! start {
            ($a:ident, $variant:ident) => {{
                let mut out = Out::new();
                let s = NodeState::$variant($a.on_start(id, storage, &mut out));
                o.append(&mut out);
                s
            }};
        }
        match self {
            Node::Master(a) => start!(a, Master),
            Node::Slave(a) => start!(a, Slave),
            Node::Client(a) => start!(a, Client),
        }
    }

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        src: Id,
        msg: Self::Msg,
        o: &mut Out<Self>,
    ) {
        match (self, &**state) {
            (Node::Master(a), NodeState::Master(s)) => delegate!(state, o, Master, s, |st, out| a
                .on_msg(id, &mut st, src, msg, &mut out)),
            (Node::Slave(a), NodeState::Slave(s)) => delegate!(state, o, Slave, s, |st, out| a
                .on_msg(id, &mut st, src, msg, &mut out)),
            (Node::Client(a), NodeState::Client(s)) => delegate!(state, o, Client, s, |st, out| a
                .on_msg(id, &mut st, src, msg, &mut out)),
            // An actor never holds another role's state.
            _ => {}
        }
    }

    fn on_timeout(
        &self,
        id: Id,
        state: &mut Cow<Self::State>,
        timer: &Self::Timer,
        o: &mut Out<Self>,
    ) {
        match (self, &**state) {
            (Node::Master(a), NodeState::Master(s)) => delegate!(state, o, Master, s, |st, out| a
                .on_timeout(id, &mut st, timer, &mut out)),
            (Node::Slave(a), NodeState::Slave(s)) => delegate!(state, o, Slave, s, |st, out| a
                .on_timeout(id, &mut st, timer, &mut out)),
            (Node::Client(a), NodeState::Client(s)) => delegate!(state, o, Client, s, |st, out| a
                .on_timeout(id, &mut st, timer, &mut out)),
            _ => {}
        }
    }
}

/// The property names and predicates of protocol 1. Each predicate is a plain function of a
/// model state, so the checker, the runtime tests and trace conformance call the same code.
pub mod props {
    use super::*;

    /// Safety 1: every live slave's (version, data) is the master's committed data at that
    /// version; reads on a slave see nothing else.
    pub const SLAVE_DATA: &str = "slave data is the master's committed data at its version";
    /// Safety 2.
    pub const NO_ABORTED_VISIBLE: &str = "no aborted or rolled-back update is visible on a slave";
    /// Safety 3.
    pub const AGREEMENT: &str = "no version is both committed and aborted";
    /// Safety 4.
    pub const COMMIT_VALIDITY: &str =
        "the master commits only after every participant voted prepared";
    /// Safety 5.
    pub const UNIQUE_VERSIONS: &str = "no two committed states share a version";
    /// Safety 6.
    pub const MONOTONIC: &str = "no node's committed version goes back across a restart";
    /// Safety 7: a Prepared vote is a promise that survives a crash.
    pub const DURABLE_VOTES: &str = "every undecided prepared vote is backed by a saved delta";
    /// Liveness, checked by Stateright's `Eventually` at terminal states.
    pub const CONVERGES: &str = "every slave converges once faults stop";
    /// Liveness, checked by [`crate::liveness`] over the whole explored graph.
    pub const CONVERGENCE_REACHABLE: &str = "convergence stays reachable from every state";
    /// Reachability.
    pub const REACH_TWO_PHASE_COMMIT: &str = "a two-phase commit reaches every slave";
    /// Reachability.
    pub const REACH_ABORT: &str = "a two-phase update aborts";
    /// Reachability.
    pub const REACH_ROLLBACK: &str = "a client rolls back an update";
    /// Reachability (three or more clients): group commit.
    pub const REACH_GROUP_COMMIT: &str = "two clients' updates commit in one two-phase round";
    /// Reachability.
    pub const REACH_DELTA: &str = "a slave catches up by delta request";
    /// Reachability.
    pub const REACH_SNAPSHOT: &str = "a slave catches up by snapshot";
    /// Reachability.
    pub const REACH_RECOVERY: &str = "a crashed slave recovers and converges";

    /// The live master's state.
    pub fn master(s: &MasterSlaveState) -> Option<&MasterState<ModelKv>> {
        match &*s.actor_states[0] {
            NodeState::Master(m) if !s.crashed[0] => Some(m),
            _ => None,
        }
    }

    /// Every live slave's state.
    pub fn live_slaves(
        s: &MasterSlaveState,
    ) -> impl Iterator<Item = (usize, &SlaveState<ModelKv>)> {
        s.actor_states
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match &**a {
                NodeState::Slave(sl) if !s.crashed[i] => Some((i, sl)),
                _ => None,
            })
    }

    /// Safety 1.
    pub fn slave_data(s: &MasterSlaveState) -> bool {
        live_slaves(s).all(|(_, sl)| {
            let v = sl.user.version;
            if v == 0 {
                sl.user.data == ModelKv::default()
            } else {
                s.history.committed.get(&v) == Some(&sl.user.data)
            }
        })
    }

    /// Safety 2.
    pub fn no_aborted_visible(s: &MasterSlaveState) -> bool {
        live_slaves(s).all(|(_, sl)| !s.history.aborted.contains(&sl.user.version))
    }

    /// Safety 3: no version is both decided committed (or revealed as committed) and aborted.
    pub fn agreement(s: &MasterSlaveState) -> bool {
        s.history.aborted.iter().all(|v| {
            !s.history.committed.contains_key(v) && !s.history.two_phase_commits.contains(v)
        })
    }

    /// Safety 4.
    pub fn commit_validity(s: &MasterSlaveState) -> bool {
        !s.history.commit_without_votes
    }

    /// Safety 5.
    pub fn unique_versions(s: &MasterSlaveState) -> bool {
        !s.history.version_reused
    }

    /// Safety 6. A node's version only grows while it runs (handlers never lower it); a
    /// crash keeps its last volatile state in the model, so a crashed node whose saved version
    /// is below the version it had would come back older.
    pub fn monotonic(s: &MasterSlaveState) -> bool {
        s.actor_states.iter().enumerate().all(|(i, a)| {
            if !s.crashed[i] {
                return true;
            }
            let saved = s.actor_storages[i].as_ref().map_or(0, Saved::version);
            match &**a {
                NodeState::Master(m) => saved >= m.user.version,
                NodeState::Slave(sl) => saved >= sl.user.version,
                NodeState::Client(_) => true,
            }
        })
    }

    /// Safety 7: while the master has not decided a version, every slave that voted
    /// Prepared for it holds the prepared delta (live) or has it saved (crashed).
    pub fn durable_votes(s: &MasterSlaveState) -> bool {
        s.history.voted.iter().all(|(id, v)| {
            let decided = s.history.aborted.contains(v) || s.history.two_phase_commits.contains(v);
            if decided {
                return true;
            }
            let i = usize::from(*id);
            let holds = |p: &Option<Step<ModelKv>>| p.as_ref().is_some_and(|p| p.new == *v);
            if s.crashed[i] {
                matches!(&s.actor_storages[i], Some(Saved::Slave(st)) if holds(&st.user.prepared))
            } else {
                matches!(&*s.actor_states[i], NodeState::Slave(sl) if holds(&sl.user.prepared) || sl.user.version >= *v)
            }
        })
    }

    /// Converged: nobody is down, the client is done, nothing is undecided, and every slave
    /// holds the master's committed version and no prepared delta.
    pub fn converged(cfg: &MasterSlaveConfig, s: &MasterSlaveState) -> bool {
        if s.crashed.iter().any(|c| *c) {
            return false;
        }
        let client_done = cfg.client_ids().iter().all(|id| {
            matches!(&*s.actor_states[usize::from(*id)],
            NodeState::Client(c) if c.next as usize >= cfg.script.len())
        });
        let Some(m) = master(s) else { return false };
        client_done
            && m.pending.is_none()
            && live_slaves(s).all(|(_, sl)| {
                sl.user.version == m.user.version
                    && sl.user.prepared.is_none()
                    && sl.waiting.is_none()
            })
    }

    /// Reachability: some two-phase commit is applied on every slave.
    pub fn two_phase_commit_everywhere(cfg: &MasterSlaveConfig, s: &MasterSlaveState) -> bool {
        let slaves: Vec<_> = live_slaves(s).collect();
        slaves.len() == cfg.slaves
            && s.history
                .two_phase_commits
                .iter()
                .any(|v| slaves.iter().all(|(_, sl)| sl.user.version >= *v))
    }

    /// Reachability: a slave restarted from its saved state and caught up with the master.
    pub fn recovered_and_converged(_cfg: &MasterSlaveConfig, s: &MasterSlaveState) -> bool {
        let Some(m) = master(s) else { return false };
        m.user.version > 0
            && live_slaves(s).any(|(_, sl)| {
                sl.recovered && sl.user.version == m.user.version && sl.user.prepared.is_none()
            })
    }
}

/// The lowest committed version slave `i` can ever hold again: its version only grows while
/// it runs, and a restart resumes from its saved version.
fn slave_floor(s: &MasterSlaveState, i: usize) -> Version {
    let saved = s.actor_storages[i].as_ref().map_or(0, Saved::version);
    match &*s.actor_states[i] {
        NodeState::Slave(sl) => sl.user.version.min(saved),
        _ => 0,
    }
}

/// The lowest "decided" version slave `i` can ever hold again (it only grows and is saved).
fn decided_floor(s: &MasterSlaveState, i: usize) -> Version {
    let saved = match &s.actor_storages[i] {
        Some(Saved::Slave(st)) => st.user.decided.max(st.user.version),
        _ => 0,
    };
    match &*s.actor_states[i] {
        NodeState::Slave(sl) => sl.user.decided.max(sl.user.version).min(saved),
        _ => 0,
    }
}

/// The master's floors: the lowest values its counters can ever take again. Each only
/// grows while the master runs, a restart resumes from the saved value, and every save
/// stores the live value. (The mutant that reuses an aborted version lowers the version
/// counter by one at most, which [`is_dead`] allows for.)
struct MasterFloor {
    version: Version,
    decided: Option<Version>,
    next_version: Version,
}

fn master_floor(s: &MasterSlaveState) -> MasterFloor {
    let NodeState::Master(m) = &*s.actor_states[0] else {
        return MasterFloor {
            version: 0,
            decided: None,
            next_version: 0,
        };
    };
    let live = (
        m.user.version,
        m.last_decision.map(|d| d.version),
        m.user.next_version,
    );
    let saved = match &s.actor_storages[0] {
        Some(Saved::Master(st)) => (
            st.user.version,
            st.last_decision.map(|d| d.version),
            st.user.next_version,
        ),
        _ => (0, None, 0),
    };
    MasterFloor {
        version: live.0.min(saved.0),
        decided: live.1.min(saved.1),
        next_version: live.2.min(saved.2),
    }
}

/// The lowest "next request" the master can ever expect again from `client`.
fn request_floor(s: &MasterSlaveState, client: Id) -> u64 {
    let live = match &*s.actor_states[0] {
        NodeState::Master(m) => m.user.clients.get(&client).map_or(0, |e| e.next_req),
        _ => 0,
    };
    let saved = match &s.actor_storages[0] {
        Some(Saved::Master(m)) => m.user.clients.get(&client).map_or(0, |e| e.next_req),
        _ => 0,
    };
    live.min(saved)
}

/// Whether the master can never again count an acknowledgement of `beat`.
fn beat_is_dead(floor: &MasterFloor, beat: &Beat) -> bool {
    beat.version < floor.version || beat.decision.map(|d| d.version) < floor.decided
}

/// Whether delivering `env` is a no-op in this state and in every state reachable from it
/// (or only produces messages that are), judged by counters that never decrease in any
/// variant of the model, mutants included. Such a message changes no behaviour, so
/// forgetting it merges states that differ only by dead messages.
fn is_dead(s: &MasterSlaveState, env: &Envelope<Msg<ModelKv>>) -> bool {
    let dst = usize::from(env.dst);
    // Ids are fixed: the master first, the clients last.
    let from_master = env.src == Id::from(0);
    // The next request of the client that sent `env`.
    let client_next =
        |s: &MasterSlaveState| match s.actor_states.get(usize::from(env.src)).map(|a| &**a) {
            Some(NodeState::Client(c)) => c.next,
            _ => 0,
        };
    match (&*s.actor_states[dst], &env.msg) {
        (NodeState::Slave(_), Msg::Service(m)) if from_master => {
            let floor = slave_floor(s, dst);
            match m {
                ServiceMsg::Announce { new: v, .. } | ServiceMsg::Commit { version: v } => {
                    *v <= floor
                }
                ServiceMsg::Abort { version: v } => *v <= decided_floor(s, dst),
                // A prepare below the floor can never be voted on: voting needs version == prior
                // and a version above every known decision.
                ServiceMsg::Prepare { prior, new, .. } => {
                    *new <= floor || *prior < floor || *new <= decided_floor(s, dst)
                }
                ServiceMsg::Delta { from, to, .. } | ServiceMsg::Snapshot { from, to, .. } => {
                    *to <= floor || *from < floor
                }
                // Nothing to learn, and the master can never count the acknowledgement.
                ServiceMsg::Heartbeat(beat) => {
                    beat.version <= floor
                        && beat
                            .decision
                            .is_none_or(|d| d.version <= decided_floor(s, dst))
                        && beat_is_dead(&master_floor(s), beat)
                }
                _ => false,
            }
        }
        // A slave only listens to the master's service layer.
        (NodeState::Slave(_), _) => true,
        (
            NodeState::Client(c),
            Msg::Client(ClientMsg::Committed { req, .. } | ClientMsg::Aborted { req, .. }),
        ) => !from_master || *req < c.next,
        (NodeState::Client(_), _) => true,
        (NodeState::Master(_), Msg::Client(ClientMsg::Update { req, .. })) => {
            let floor = request_floor(s, env.src);
            // Older requests are ignored; the last one is answered, uselessly if the client has
            // the answer.
            req + 1 < floor || (req + 1 == floor && *req < client_next(s))
        }
        (NodeState::Master(_), Msg::Client(ClientMsg::Rollback { req })) => {
            req + 1 < request_floor(s, env.src) || *req < client_next(s)
        }
        (
            NodeState::Master(m),
            Msg::Service(ServiceMsg::Prepared { version: v } | ServiceMsg::Refused { version: v }),
        ) => {
            // A vote counts only for the pending update. The counter only drops (mutant) from
            // a pending version's successor to that version, so below the floor and not
            // pending (live or saved) means never pending again.
            let saved_pending = match &s.actor_storages[0] {
                Some(Saved::Master(st)) => st.pending.as_ref().map(|p| p.step.new),
                _ => None,
            };
            *v < master_floor(s).next_version
                && m.pending.as_ref().is_none_or(|p| p.step.new != *v)
                && saved_pending != Some(*v)
        }
        // Every answer would be dead at the slave: it answers only its current version.
        (NodeState::Master(_), Msg::Service(ServiceMsg::DeltaRequest { from })) => {
            *from < slave_floor(s, usize::from(env.src))
        }
        (NodeState::Master(_), Msg::Service(ServiceMsg::HeartbeatAck(beat))) => {
            beat_is_dead(&master_floor(s), beat)
        }
        _ => false,
    }
}

/// The symmetry function to use for `model`: [`representative`], unless the model has an
/// `Eventually` property. Stateright only evaluates `Eventually` at terminal states and
/// treats reaching a known state as non-terminal, so merging a state with dead messages into
/// the same state without them would hide the terminal one; [`slave_symmetry`] keeps
/// states apart except for the order of slaves.
pub fn symmetry_for(model: &MasterSlaveModel) -> fn(&MasterSlaveState) -> MasterSlaveState {
    use stateright::Model;
    if model
        .properties()
        .iter()
        .any(|p| p.expectation == Expectation::Eventually)
    {
        slave_symmetry
    } else {
        representative
    }
}

/// Symmetry over slaves only: the state with its slaves sorted, nothing forgotten.
pub fn slave_symmetry(s: &MasterSlaveState) -> MasterSlaveState {
    let plan = slave_plan(s);
    permuted(s, &plan, s.network.rewrite(&plan))
}

/// `s` with its actors permuted by `plan` and `network` (already rewritten) in place.
fn permuted(
    s: &MasterSlaveState,
    plan: &SlavePlan,
    network: Network<Msg<ModelKv>>,
) -> MasterSlaveState {
    ActorModelState {
        actor_states: plan.reindex(&s.actor_states),
        network,
        timers_set: plan.reindex(&s.timers_set),
        random_choices: plan.reindex(&s.random_choices),
        crashed: plan.reindex(&s.crashed),
        history: s.history.rewrite(plan),
        actor_storages: plan.reindex(&s.actor_storages),
    }
}

/// The permutation that sorts slaves by (state, saved state, crash flag), keeping the master
/// and the client in place.
type SlavePlan = RewritePlan<Id, stateright::util::DenseNatMap<Id, Id>>;

fn slave_plan(s: &MasterSlaveState) -> SlavePlan {
    let keys: Vec<_> = (0..s.actor_states.len())
        .map(|i| {
            let rank = match &*s.actor_states[i] {
                NodeState::Master(_) => 0u8,
                NodeState::Slave(_) => 1,
                NodeState::Client(_) => 2,
            };
            (
                rank,
                if rank == 1 { 0 } else { i },
                s.actor_states[i].clone(),
                s.actor_storages[i].clone(),
                s.crashed[i],
            )
        })
        .collect();
    RewritePlan::<Id, _>::from_values_to_sort(&keys)
}

/// The symmetry representative for DFS: sorts the slaves (with their saved state, crash
/// flag, timers and the ids in messages and ghost) while the master and the client stay put.
/// It also forgets dead messages (see [`is_dead`]) and the duplicating network's record of
/// the last delivered message, which no behaviour depends on.
pub fn representative(s: &MasterSlaveState) -> MasterSlaveState {
    let plan = slave_plan(s);
    let network = match &s.network {
        Network::UnorderedDuplicating(set, _) => Network::new_unordered_duplicating(
            set.iter()
                .filter(|env| !is_dead(s, env))
                .map(|env| env.rewrite(&plan)),
        ),
        Network::UnorderedNonDuplicating(_) => Network::new_unordered_nonduplicating(
            s.network
                .iter_all()
                .filter(|env| !is_dead(s, &env.to_cloned_msg()))
                .map(|env| env.to_cloned_msg().rewrite(&plan)),
        ),
        Network::Ordered(_) => s.network.rewrite(&plan),
    };
    permuted(s, &plan, network)
}

/// Drops from `s` what [`canonical_fingerprint`] ignores and no step reads: the dead
/// messages (see [`is_dead`]; dead stays dead, so they would only be cloned, hashed and
/// delivered as no-ops from here on) and the duplicating network's record of the last
/// delivered message. For [`crate::explore::Options::normalize`].
pub fn forget_dead(s: &mut MasterSlaveState) {
    match &s.network {
        Network::UnorderedDuplicating(set, _) => {
            let dead: Vec<_> = set.iter().filter(|e| is_dead(s, e)).cloned().collect();
            if let Network::UnorderedDuplicating(set, last) = &mut s.network {
                for e in &dead {
                    set.remove(e);
                }
                *last = None;
            }
        }
        Network::UnorderedNonDuplicating(bag) => {
            let dead: Vec<_> = bag.keys().filter(|e| is_dead(s, e)).cloned().collect();
            if let Network::UnorderedNonDuplicating(bag) = &mut s.network {
                for e in &dead {
                    bag.remove(e);
                }
            }
        }
        // A queue is delivered in order: a dead message ahead of a live one still holds it back.
        Network::Ordered(_) => {}
    }
}

/// `s` with every message in flight lost, or `None` if nothing is in flight: the one loss a
/// search of a lossy duplicating network explores ([`crate::explore::Jump`]). It decides
/// everything the whole lossy space decides, in a space little larger than the loss-free one:
///
/// - Safety and reachability: the states it adds are lossy-reachable, and the loss-free
///   states it keeps decide every `Always`/`Sometimes` property exactly
///   ([`MasterSlaveConfig::safety_equivalent`]).
/// - The liveness graph ("convergence stays reachable from every state"): on a duplicating
///   network fewer messages never enable more, since a delivery keeps its message, an actor
///   sees only what is delivered and [`props::converged`] does not read the network. So if a
///   lossy-reachable state is a trap, the same state with its network emptied is a trap too;
///   its actors, storages, timers and ghost are those of a loss-free-reachable state
///   (whose messages can all be lost), so it is `lose_all` of a state this search explores,
///   and every fair step from it is explored. A trap found is real: every state explored is
///   lossy-reachable. The check is exact for the lossy space.
///
/// Only for duplicating networks (on others the argument fails: a message delivered once is
/// gone), where it is `None` too.
pub fn lose_all(s: &MasterSlaveState) -> Option<MasterSlaveState> {
    match &s.network {
        // Everything but the network, without copying the network first.
        Network::UnorderedDuplicating(set, _) if !set.is_empty() => Some(ActorModelState {
            actor_states: s.actor_states.clone(),
            network: Network::new_unordered_duplicating([]),
            timers_set: s.timers_set.clone(),
            random_choices: s.random_choices.clone(),
            crashed: s.crashed.clone(),
            history: s.history.clone(),
            actor_storages: s.actor_storages.clone(),
        }),
        _ => None,
    }
}

/// The model's actions [`lose_all`] stands for: one loss per message in flight (on a
/// duplicating network).
pub fn lose_all_actions(
    s: &MasterSlaveState,
) -> Vec<stateright::actor::ActorModelAction<Msg<ModelKv>, super::Timer, ()>> {
    s.network
        .iter_all()
        .map(|env| stateright::actor::ActorModelAction::Drop(env.to_cloned_msg()))
        .collect()
}

/// The canonical fingerprint of `s` for [`crate::explore`]: the hash of a canonical form of
/// `s` under renaming of slaves, with dead messages forgotten (see [`is_dead`]), computed
/// without building that form. Slaves are ordered by a hash of everything they own; slaves
/// that own the same things are interchangeable, and the id-dependent rest (the master's
/// votes and acks, the ghost's voters, the network) is hashed under every order of them,
/// keeping the least. So two states get the same fingerprint exactly when one is a renaming
/// of the other (up to 64-bit collisions), whatever order the search meets them in. Like
/// [`representative`] it forgets dead messages: it is for `Always`/`Sometimes` properties
/// and the graph check, not for Stateright's `Eventually`.
pub fn canonical_fingerprint(s: &MasterSlaveState) -> u64 {
    fingerprint(s, true, true)
}

/// [`canonical_fingerprint`] without each slave's `recovered` flag, which only
/// [`props::REACH_RECOVERY`] reads: 2.8 times fewer states in the default config.
///
/// It is exact for every other verdict: no step, no `Always` property and no other
/// `Sometimes` property reads the flag, so states that differ only in it have the same
/// futures up to the flag. For [`props::REACH_RECOVERY`] a search with it can miss a
/// discovery but never invent one: [`crate::explore`] judges `Sometimes` properties on
/// states it generated, each the end of a real path. So "reached" is final, and "not
/// reached" must be confirmed by a search with [`canonical_fingerprint`] (see
/// [`BLIND_TO`]).
pub fn recovery_blind_fingerprint(s: &MasterSlaveState) -> u64 {
    fingerprint(s, false, true)
}

/// [`recovery_blind_fingerprint`] of a state [`forget_dead`] normalized, which has no dead
/// message left to leave out: the same value, without looking for them again (for
/// [`crate::explore::Options::normalize`] with [`forget_dead`]).
pub fn recovery_blind_fingerprint_of_normalized(s: &MasterSlaveState) -> u64 {
    fingerprint(s, false, false)
}

/// The properties a search with [`recovery_blind_fingerprint`] may miss: "not reached" for
/// them is confirmed with [`canonical_fingerprint`].
pub const BLIND_TO: &[&str] = &[props::REACH_RECOVERY];

fn fingerprint(s: &MasterSlaveState, with_recovered: bool, look_for_dead: bool) -> u64 {
    use crate::explore::{hash_of, hasher};
    use std::hash::{Hash, Hasher};
    let n = s.actor_states.len();
    // The clients follow the slaves.
    let client = (1..n)
        .find(|&i| matches!(&*s.actor_states[i], NodeState::Client(_)))
        .unwrap_or(n);
    let own = |i: usize| {
        let node = match &*s.actor_states[i] {
            NodeState::Slave(sl) => hash_of(&(
                &sl.user,
                &sl.waiting,
                &sl.requested,
                with_recovered && sl.recovered,
            )),
            other => hash_of(other),
        };
        hash_of(&(
            node,
            &s.actor_storages[i],
            s.crashed[i],
            &s.timers_set[i],
            &s.random_choices[i],
        ))
    };
    let mut order: Vec<(u64, usize)> = (1..client).map(|i| (own(i), i)).collect();
    order.sort_unstable();

    // What does not depend on slave ids.
    let mut h = hasher();
    for (key, _) in &order {
        key.hash(&mut h);
    }
    match &*s.actor_states[0] {
        NodeState::Master(m) => (&m.user, &m.pending, &m.last_decision, &m.queue).hash(&mut h),
        other => other.hash(&mut h),
    }
    (
        &s.actor_storages[0],
        s.crashed[0],
        &s.timers_set[0],
        &s.random_choices[0],
    )
        .hash(&mut h);
    for c in client..n {
        own(c).hash(&mut h);
    }
    // The ghost. Left out: `rolled_back`, `delta_applied` and `snapshot_applied`. No step and
    // no `Always` property reads them, each is read by one `Sometimes` property alone, and
    // whether a step sets one depends on the rest of the state and the step only;
    // [`crate::explore`] judges `Sometimes` properties on every generated state, so merging
    // states that differ only in these bits loses no verdict (and halves the default space).
    let g = &s.history;
    (
        &g.committed,
        &g.proposed,
        &g.two_phase_commits,
        &g.aborted,
        g.version_reused,
        g.commit_without_votes,
        &g.replied,
        g.group_committed,
    )
        .hash(&mut h);
    // Each live message: its ends and the hash of its content, which no renaming changes.
    let live: Vec<(usize, usize, u64)> = match &s.network {
        Network::UnorderedDuplicating(set, _) => set
            .iter()
            .filter(|e| !look_for_dead || !is_dead(s, e))
            .map(|e| (usize::from(e.src), usize::from(e.dst), hash_of(&e.msg)))
            .collect(),
        Network::UnorderedNonDuplicating(bag) => bag
            .iter()
            .filter(|(e, _)| !look_for_dead || !is_dead(s, e))
            .map(|(e, count)| {
                (
                    usize::from(e.src),
                    usize::from(e.dst),
                    hash_of(&(&e.msg, count)),
                )
            })
            .collect(),
        Network::Ordered(links) => links
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|((src, dst), queue)| (usize::from(*src), usize::from(*dst), hash_of(queue)))
            .collect(),
    };

    // What does, under one renaming `perm[old id] = new id`.
    let renamed = |perm: &[usize]| -> u64 {
        let rename = |id: Id| Id::from(perm[usize::from(id)]);
        let mut h = hasher();
        if let NodeState::Master(m) = &*s.actor_states[0] {
            let ids = |set: &BTreeSet<Id>| {
                let mut v: Vec<Id> = set.iter().map(|id| rename(*id)).collect();
                v.sort_unstable();
                v
            };
            (ids(&m.votes), ids(&m.acked)).hash(&mut h);
        }
        let mut voted: Vec<(Id, Version)> =
            g.voted.iter().map(|(id, v)| (rename(*id), *v)).collect();
        voted.sort_unstable();
        voted.hash(&mut h);
        // The network as a multiset of renamed live messages: an order-free sum of hashes.
        let mut net = 0u64;
        for (src, dst, content) in &live {
            net = net.wrapping_add(hash_of(&(perm[*src], perm[*dst], content)));
        }
        net.hash(&mut h);
        h.finish()
    };

    // Every renaming that keeps the order by key: tied slaves in any order.
    let mut perm: Vec<usize> = (0..n).collect();
    for (k, (_, i)) in order.iter().enumerate() {
        perm[*i] = k + 1;
    }
    let mut least = renamed(&perm);
    let mut start = 0;
    let mut groups = Vec::new();
    while start < order.len() {
        let end = start
            + order[start..]
                .iter()
                .take_while(|o| o.0 == order[start].0)
                .count();
        if end - start > 1 {
            groups.push(start..end);
        }
        start = end;
    }
    if !groups.is_empty() {
        let mut positions: Vec<usize> = (1..client).collect();
        each_order(&mut positions, &groups, 0, &mut |pos| {
            for (k, (_, i)) in order.iter().enumerate() {
                perm[*i] = pos[k];
            }
            least = least.min(renamed(&perm));
        });
    }
    least.hash(&mut h);
    h.finish()
}

/// Calls `f` with `positions` permuted in every way within each of `groups` (from `g` on).
fn each_order(
    positions: &mut Vec<usize>,
    groups: &[std::ops::Range<usize>],
    g: usize,
    f: &mut impl FnMut(&[usize]),
) {
    let Some(range) = groups.get(g) else {
        f(positions);
        return;
    };
    // Heap's algorithm over the group's slice, recursing into the next group at each order.
    fn heap(
        k: usize,
        range: &std::ops::Range<usize>,
        positions: &mut Vec<usize>,
        groups: &[std::ops::Range<usize>],
        g: usize,
        f: &mut impl FnMut(&[usize]),
    ) {
        if k <= 1 {
            each_order(positions, groups, g + 1, f);
            return;
        }
        heap(k - 1, range, positions, groups, g, f);
        for i in 0..k - 1 {
            let j = if k.is_multiple_of(2) { i } else { 0 };
            positions.swap(range.start + j, range.start + k - 1);
            heap(k - 1, range, positions, groups, g, f);
        }
    }
    heap(range.len(), range, positions, groups, g, f);
}

/// Whether an action is fair for liveness: delivery, timer firing and recovery are; message
/// loss and crashes are the faults that "stop".
pub fn is_fair(
    action: &stateright::actor::ActorModelAction<Msg<ModelKv>, super::Timer, ()>,
) -> bool {
    use stateright::actor::ActorModelAction as A;
    matches!(action, A::Deliver { .. } | A::Timeout(..) | A::Recover(_))
}

/// Runs [`crate::liveness::convergence_reachable`] on this model, with slave symmetry.
pub fn check_convergence(
    model: &MasterSlaveModel,
    max_states: usize,
) -> crate::liveness::GraphReport<MasterSlaveModel> {
    let cfg = model.cfg.clone();
    crate::liveness::convergence_reachable(
        model,
        &canonical_fingerprint,
        is_fair,
        move |s| props::converged(&cfg, s),
        // The in-flight bound of non-duplicating networks only keeps the space finite.
        true,
        max_states,
    )
}
