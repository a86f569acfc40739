//! The checked system of protocol 2: the master (actor 0), the backup (actor 1), optional
//! further slaves, and one scripted client (the last actor), over an unordered duplicating
//! network (optionally lossy) with crashes of servers; the ghost history the properties
//! read; the properties; the liveness goal.

use super::client::{ClientState, FailoverClient};
use super::msg::{Answer, BACKUP, ClientOp, Epoch, MASTER, Msg, OpNumber, Timer, UpdateId};
use super::node::{FailoverNode, NodeState, NodeStorage, Role, Timing};
use super::{Mutant, Variant};
use crate::store::{KvOp, Payload};
use stateright::Expectation;
use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id, LossyNetwork, Network, Out,
};
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// The model's key.
pub type Key = u8;
/// The model's value.
pub type Value = u8;
/// The model's client operation.
pub type ModelOp = ClientOp<Key, Value>;

/// Parses a script: comma-separated `wN` (write N to key 0), `d` (delete key 0), `r` (read
/// key 0). The store is a map, and the client's history is checked as a register: key 0.
pub fn try_script(s: &str) -> Result<Vec<ModelOp>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t {
            "r" => Ok(ClientOp::Read(0)),
            "d" => Ok(ClientOp::Update(KvOp::Delete(0))),
            _ => t
                .strip_prefix('w')
                .and_then(|v| v.parse::<Value>().ok())
                .map(|v| ClientOp::Update(KvOp::Put(0, v)))
                .ok_or_else(|| format!("unknown operation '{t}' (expected wN, d or r)")),
        })
        .collect()
}

/// The text of a script, as [`try_script`] reads it.
pub fn script_text(script: &[ModelOp]) -> String {
    let parts: Vec<String> = script
        .iter()
        .map(|op| match op {
            ClientOp::Read(_) => "r".to_string(),
            ClientOp::Update(KvOp::Delete(_)) => "d".to_string(),
            ClientOp::Update(KvOp::Put(_, v)) => format!("w{v}"),
        })
        .collect();
    parts.join(",")
}

/// A model configuration of protocol 2; [`FailoverConfig::into_model`] builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverConfig {
    /// The seed's scheme or the shipped one.
    pub variant: Variant,
    /// The client's operations.
    pub script: Vec<ModelOp>,
    /// Further slaves beside the backup.
    pub slaves: usize,
    /// Whether messages can be lost.
    pub lossy: bool,
    /// How many servers may be down at the same time.
    pub max_crashes: usize,
    /// A deliberate bug (fenced variant).
    pub mutant: Option<Mutant>,
}

impl Default for FailoverConfig {
    /// The shipped variant: two writes, loss-free duplicating network, one server down at a
    /// time (a few seconds; `w1,w2,r` takes about ten times as long, see
    /// `docs/failover.md`).
    fn default() -> Self {
        FailoverConfig {
            variant: Variant::Fenced,
            script: try_script("w1,w2").expect("a valid script"),
            slaves: 0,
            lossy: false,
            max_crashes: 1,
            mutant: None,
        }
    }
}

impl FailoverConfig {
    /// The seed's scheme on the default script.
    pub fn seed() -> FailoverConfig {
        FailoverConfig {
            variant: Variant::Seed,
            ..FailoverConfig::default()
        }
    }

    /// How many servers.
    pub fn servers(&self) -> usize {
        2 + self.slaves
    }

    /// The client's actor index.
    pub fn client(&self) -> usize {
        self.servers()
    }

    /// The config whose space decides every safety and reachability property of this one,
    /// and is smaller: the loss-free one. On an unordered duplicating network a delivered
    /// message stays deliverable and no message's presence disables an action, so every run
    /// with drops is matched by the run that never delivers those messages again, through
    /// the same actor states, storages and ghost.
    pub fn safety_equivalent(&self) -> FailoverConfig {
        FailoverConfig {
            lossy: false,
            ..self.clone()
        }
    }

    /// Builds the actor model with every property that applies to this config.
    pub fn into_model(self) -> FailoverModel {
        let servers = self.servers();
        let ids: Vec<Id> = (0..servers).map(Id::from).collect();
        let mut actors: Vec<Member<Key, Value>> = (0..servers)
            .map(|i| {
                let designation = match i {
                    MASTER => Role::Master,
                    BACKUP => Role::Backup,
                    _ => Role::Slave,
                };
                let peers = ids
                    .iter()
                    .copied()
                    .filter(|p| usize::from(*p) != i)
                    .collect();
                let mut node =
                    FailoverNode::new(self.variant, designation, Id::from(BACKUP), peers);
                node.mutant = self.mutant;
                Member::Node(node)
            })
            .collect();
        actors.push(Member::Client(FailoverClient {
            variant: self.variant,
            master: Id::from(MASTER),
            backup: Id::from(BACKUP),
            script: self.script.clone(),
            timing: Timing::default(),
        }));
        let mut model = ActorModel::new(self.clone(), Ghost::default())
            .actors(actors)
            .init_network(Network::new_unordered_duplicating([]))
            .lossy_network(if self.lossy {
                LossyNetwork::Yes
            } else {
                LossyNetwork::No
            })
            .max_crashes(self.max_crashes)
            .record_msg_out(Ghost::record_out)
            .record_msg_in(Ghost::record_in)
            // Only servers crash: a client that loses its place would re-issue operations
            // the history already holds.
            .within_boundary(|cfg, s| !s.crashed[cfg.client()]);

        use props::*;
        model = model
            .property(Expectation::Always, ONE_APPROVER, |_, s| one_approver(s))
            .property(Expectation::Always, NO_DIVERGENCE, |_, s| no_divergence(s))
            .property(Expectation::Always, ACKED_SURVIVE, |_, s| acked_survive(s))
            .property(Expectation::Always, LINEARIZABLE, |_, s| {
                s.history.linearizable.serialized_history().is_some()
            })
            .property(Expectation::Sometimes, REACH_TAKEOVER, |_, s| {
                servers_of(s).any(|(_, n)| n.role == Role::Approver)
            })
            .property(Expectation::Sometimes, REACH_DONE, |m, s| {
                client_done(&m.cfg, s)
            });
        if self.variant == Variant::Fenced {
            model = model.property(Expectation::Sometimes, REACH_REJOIN, |_, s| rejoined(s));
        }
        model
    }
}

impl fmt::Display for FailoverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failover: variant={} script={} slaves={} network={}duplicating crashes={} mutant={}",
            self.variant.name(),
            script_text(&self.script),
            self.slaves,
            if self.lossy { "lossy," } else { "" },
            self.max_crashes,
            self.mutant.map_or("none", Mutant::name),
        )
    }
}

/// The actors of the checked system.
#[derive(Clone, Debug)]
pub enum Member<K: crate::store::Payload, V: crate::store::Payload> {
    /// A server.
    Node(FailoverNode<K, V>),
    /// The client.
    Client(FailoverClient<K, V>),
}

/// The state of one actor of the checked system.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum MemberState<K: crate::store::Payload, V: crate::store::Payload> {
    /// A server's.
    Node(NodeState<K, V>),
    /// The client's.
    Client(ClientState),
}

/// Runs one step of an inner actor on the matching variant of a [`MemberState`], keeping
/// the state borrowed unless the inner actor changed it (so no-op steps stay visible to the
/// checker and nothing is cloned).
macro_rules! delegate {
    ($state:ident, $o:ident, $variant:ident, $inner:ident, |$st:ident, $out:ident| $call:expr) => {{
        let mut $st = Cow::Borrowed($inner);
        let mut $out = Out::new();
        $call;
        $o.append(&mut $out);
        if let Cow::Owned(next) = $st {
            *$state = Cow::Owned(MemberState::$variant(next));
        }
    }};
}

impl<K: crate::store::Payload, V: crate::store::Payload> Actor for Member<K, V> {
    type Msg = Msg<K, V>;
    type State = MemberState<K, V>;
    type Timer = Timer;
    type Storage = NodeStorage<K, V>;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> Self::State {
        let mut out = Out::new();
        let s = match self {
            Member::Node(a) => MemberState::Node(a.on_start(id, storage, &mut out)),
            Member::Client(a) => {
                let mut c = Out::new();
                let s = MemberState::Client(a.on_start(id, storage, &mut c));
                o.append(&mut c);
                s
            }
        };
        o.append(&mut out);
        s
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
            (Member::Node(a), MemberState::Node(s)) => {
                delegate!(state, o, Node, s, |st, out| a
                    .on_msg(id, &mut st, src, msg, &mut out))
            }
            (Member::Client(a), MemberState::Client(s)) => {
                delegate!(state, o, Client, s, |st, out| a
                    .on_msg(id, &mut st, src, msg, &mut out))
            }
            // An actor never holds another's state.
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
            (Member::Node(a), MemberState::Node(s)) => {
                delegate!(state, o, Node, s, |st, out| a
                    .on_timeout(id, &mut st, timer, &mut out))
            }
            (Member::Client(a), MemberState::Client(s)) => {
                delegate!(state, o, Client, s, |st, out| a
                    .on_timeout(id, &mut st, timer, &mut out))
            }
            _ => {}
        }
    }
}

/// The model type built by [`FailoverConfig::into_model`].
pub type FailoverModel = ActorModel<Member<Key, Value>, FailoverConfig, Ghost>;
/// A state of [`FailoverModel`].
pub type FailoverState = ActorModelState<Member<Key, Value>, Ghost>;
/// An action of [`FailoverModel`].
pub type FailoverAction = ActorModelAction<Msg<Key, Value>, Timer, ()>;

/// The client's history as a register (key 0 of the store).
pub type History = LinearizabilityTester<Id, Register<Option<Value>>>;

/// A client operation on one key as an operation of a register: a put writes its value, a
/// delete writes "absent", a read reads.
pub fn register_op<K: Payload, V: Payload>(op: &ClientOp<K, V>) -> RegisterOp<Option<V>> {
    match op {
        ClientOp::Update(KvOp::Put(_, v)) => RegisterOp::Write(Some(v.clone())),
        ClientOp::Update(KvOp::Delete(_)) => RegisterOp::Write(None),
        ClientOp::Read(_) => RegisterOp::Read,
    }
}

/// An approver's answer as a register's return.
pub fn register_ret<V: Payload>(answer: &Answer<V>) -> RegisterRet<Option<V>> {
    match answer {
        Answer::Written { .. } => RegisterRet::WriteOk,
        Answer::Value { value, .. } => RegisterRet::ReadOk(value.clone()),
    }
}

/// The key an operation is on.
fn key_of<K: Payload, V: Payload>(op: &ClientOp<K, V>) -> &K {
    match op {
        ClientOp::Update(KvOp::Put(k, _) | KvOp::Delete(k)) | ClientOp::Read(k) => k,
    }
}

/// The history of clients of a whole store, judged as the model judges its client's: one
/// register per key, each by the linearizability tester of [`History`] (linearizability is
/// local: the store's history is linearizable exactly when every key's is). A thread is
/// one client doing one operation at a time; an operation that is never answered (its
/// outcome unknown) stays invoked, may or may not have taken effect, and ends its thread.
#[derive(Clone, Debug)]
pub struct StoreHistory<K: Payload, V: Payload> {
    keys: std::collections::BTreeMap<K, LinearizabilityTester<u64, Register<Option<V>>>>,
    in_flight: std::collections::BTreeMap<u64, K>,
}

impl<K: Payload, V: Payload> Default for StoreHistory<K, V> {
    fn default() -> Self {
        StoreHistory {
            keys: Default::default(),
            in_flight: Default::default(),
        }
    }
}

impl<K: Payload, V: Payload> StoreHistory<K, V> {
    /// Thread `thread` invokes `op` (before its first send).
    pub fn invoke(&mut self, thread: u64, op: &ClientOp<K, V>) -> Result<(), String> {
        let key = key_of(op).clone();
        if self.in_flight.insert(thread, key.clone()).is_some() {
            return Err(format!("thread {thread} invoked while one is in flight"));
        }
        let tester = self
            .keys
            .entry(key)
            .or_insert_with(|| LinearizabilityTester::new(Register(None)));
        tester.on_invoke(thread, register_op(op)).map(|_| ())
    }

    /// Thread `thread`'s operation in flight returned `answer`.
    pub fn answer(&mut self, thread: u64, answer: &Answer<V>) -> Result<(), String> {
        let key = self
            .in_flight
            .remove(&thread)
            .ok_or_else(|| format!("thread {thread} has nothing in flight"))?;
        let tester = self
            .keys
            .get_mut(&key)
            .ok_or_else(|| format!("no history of thread {thread}'s key"))?;
        tester.on_return(thread, register_ret(answer)).map(|_| ())
    }

    /// The first key whose history is not linearizable, with its operations by thread; `None`
    /// when every key's is.
    pub fn violation(&self) -> Option<String> {
        self.keys
            .iter()
            .find(|(_, t)| t.serialized_history().is_none())
            .map(|(k, t)| format!("key {k:?}: {t:?}"))
    }
}

/// Ghost state for the properties, reconstructed from the messages actors sent and
/// received. It is never read by protocol logic.
#[derive(Clone, Debug, Hash, PartialEq)]
pub struct Ghost {
    /// (epoch, server) of every approval: an update advised (or, in the shipped master's
    /// case, proposed) by that server in that epoch.
    pub approvals: BTreeSet<(Epoch, usize)>,
    /// (epoch of the approver, update) of every acknowledgement sent to a client.
    pub acked: BTreeSet<(Epoch, UpdateId)>,
    /// The client's operations, invoked at their first send and returned at the first reply
    /// the client takes, for the linearizability tester.
    pub linearizable: History,
    /// The operation the tester holds in flight.
    pub in_flight: Option<OpNumber>,
    /// A delta was delivered to the master's server (a catch-up after rejoining).
    pub delta_to_master: bool,
}

impl Default for Ghost {
    fn default() -> Self {
        Ghost {
            approvals: BTreeSet::new(),
            acked: BTreeSet::new(),
            linearizable: LinearizabilityTester::new(Register(None)),
            in_flight: None,
            delta_to_master: false,
        }
    }
}

impl Ghost {
    fn record_out(
        cfg: &FailoverConfig,
        ghost: &Self,
        env: Envelope<&Msg<Key, Value>>,
    ) -> Option<Self> {
        let src = usize::from(env.src);
        match env.msg {
            Msg::Request { op, request, .. }
                if src == cfg.client() && ghost.in_flight != Some(*op) =>
            {
                let mut g = ghost.clone();
                // An invalid invocation (none can happen: one operation at a time) leaves
                // the tester invalid, which the property reports.
                let _ = g.linearizable.on_invoke(env.src, register_op(request));
                g.in_flight = Some(*op);
                Some(g)
            }
            Msg::Advise { epoch, .. } if !ghost.approvals.contains(&(*epoch, src)) => {
                let mut g = ghost.clone();
                g.approvals.insert((*epoch, src));
                Some(g)
            }
            Msg::Reply {
                op,
                epoch,
                answer: Answer::Written { .. },
            } => {
                let update = UpdateId {
                    client: usize::from(env.dst) as u64,
                    op: *op,
                };
                if ghost.acked.contains(&(*epoch, update)) {
                    return None;
                }
                let mut g = ghost.clone();
                g.acked.insert((*epoch, update));
                Some(g)
            }
            _ => None,
        }
    }

    fn record_in(
        _cfg: &FailoverConfig,
        ghost: &Self,
        env: Envelope<&Msg<Key, Value>>,
    ) -> Option<Self> {
        match env.msg {
            Msg::Reply { op, answer, .. } if ghost.in_flight == Some(*op) => {
                let mut g = ghost.clone();
                let _ = g.linearizable.on_return(env.dst, register_ret(answer));
                g.in_flight = None;
                Some(g)
            }
            Msg::Delta { .. } if usize::from(env.dst) == MASTER && !ghost.delta_to_master => {
                let mut g = ghost.clone();
                g.delta_to_master = true;
                Some(g)
            }
            _ => None,
        }
    }
}

/// Every live server's state, with its index.
pub fn servers_of(s: &FailoverState) -> impl Iterator<Item = (usize, &NodeState<Key, Value>)> {
    s.actor_states
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match &**a {
            MemberState::Node(n) if !s.crashed[i] => Some((i, n)),
            _ => None,
        })
}

/// The client's state.
pub fn client_of(s: &FailoverState) -> Option<&ClientState> {
    s.actor_states.iter().find_map(|a| match &**a {
        MemberState::Client(c) => Some(c),
        _ => None,
    })
}

/// Whether the client has had every operation answered.
pub fn client_done(cfg: &FailoverConfig, s: &FailoverState) -> bool {
    client_of(s).is_some_and(|c| c.next >= cfg.script.len())
}

/// The property names and predicates of protocol 2. Each predicate is a plain function of
/// a model state, so tests and the checker call the same code.
pub mod props {
    use super::*;

    /// At most one server approves in each epoch (the seed: two approvers, a split brain).
    pub const ONE_APPROVER: &str = "at most one server approves in each epoch";
    /// No two servers hold different updates at the same version.
    pub const NO_DIVERGENCE: &str = "no two servers hold different updates at the same version";
    /// Every update acknowledged to a client survives a takeover.
    pub const ACKED_SURVIVE: &str =
        "every update acknowledged to a client is held by the backup once it takes over";
    /// The client's history is linearizable (a register).
    pub const LINEARIZABLE: &str = "the client's history is linearizable";
    /// Reachability.
    pub const REACH_TAKEOVER: &str = "the backup takes over";
    /// Reachability.
    pub const REACH_REJOIN: &str = "a returning master rejoins as a slave and catches up by delta";
    /// Reachability.
    pub const REACH_DONE: &str = "the client completes its script";
    /// Liveness, checked by the graph check over the whole explored space (fair steps:
    /// deliveries, timers, a restart of any server but the master).
    pub const PENDING_COMPLETE: &str = "with the master down for good, pending updates complete at the backup; a returning master catches up";

    /// No epoch has two approving servers.
    pub fn one_approver(s: &FailoverState) -> bool {
        s.history
            .approvals
            .iter()
            .zip(s.history.approvals.iter().skip(1))
            .all(|(a, b)| a.0 != b.0)
    }

    /// Every log of a server (live state or saved storage) agrees with every other at every
    /// version both hold.
    pub fn no_divergence(s: &FailoverState) -> bool {
        let mut logs: Vec<Vec<UpdateId>> = servers_of(s)
            .map(|(_, n)| n.log.iter().map(|e| e.update).collect())
            .collect();
        logs.extend(
            s.actor_storages
                .iter()
                .flatten()
                .map(|st: &NodeStorage<Key, Value>| st.log.iter().map(|e| e.update).collect()),
        );
        logs.iter()
            .all(|a| logs.iter().all(|b| a.iter().zip(b).all(|(x, y)| x == y)))
    }

    /// Every live server that took over holds every update acknowledged (by anyone) in its
    /// epoch or an earlier one. (Two approvers of one epoch are [`ONE_APPROVER`]'s
    /// business.)
    pub fn acked_survive(s: &FailoverState) -> bool {
        servers_of(s)
            .filter(|(_, n)| n.role == Role::Approver)
            .all(|(_, n)| {
                s.history
                    .acked
                    .iter()
                    .filter(|(e, _)| *e <= n.epoch)
                    .all(|(_, u)| n.version_of(*u).is_some())
            })
    }

    /// The master's server is a live slave holding exactly the approver's log, with an
    /// update of a later epoch it received by delta.
    pub fn rejoined(s: &FailoverState) -> bool {
        let mut live = servers_of(s);
        let (Some((MASTER, m)), Some((BACKUP, b))) = (live.next(), live.next()) else {
            return false;
        };
        s.history.delta_to_master
            && m.role == Role::Slave
            && b.role == Role::Approver
            && m.log == b.log
            && m.log.iter().any(|e| e.epoch > 0)
    }

    /// Liveness goal: the client is done and every live server holds the same log.
    pub fn settled(cfg: &FailoverConfig, s: &FailoverState) -> bool {
        let mut live = servers_of(s);
        let first = live.next().map(|(_, n)| &n.log);
        client_done(cfg, s) && live.all(|(_, n)| Some(&n.log) == first)
    }

    /// The fair steps of the liveness check: deliveries, timers, and the restart of any
    /// server but the master (which may stay down for good).
    pub fn fair(action: &FailoverAction) -> bool {
        match action {
            ActorModelAction::Deliver { .. } | ActorModelAction::Timeout(..) => true,
            ActorModelAction::Recover(id) => usize::from(*id) != MASTER,
            _ => false,
        }
    }

    /// Every property's stable id (for `--json` and scripts), beside its prose name: an id
    /// never changes once published, the prose may.
    pub const IDS: &[(&str, &str)] = &[
        ("one-approver", ONE_APPROVER),
        ("no-divergence", NO_DIVERGENCE),
        ("acked-survive", ACKED_SURVIVE),
        ("linearizable", LINEARIZABLE),
        ("reach-takeover", REACH_TAKEOVER),
        ("reach-rejoin", REACH_REJOIN),
        ("reach-done", REACH_DONE),
        ("pending-complete", PENDING_COMPLETE),
    ];
}
