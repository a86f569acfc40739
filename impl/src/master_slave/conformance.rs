//! Trace conformance: reads the traces of a run of protocol 1 ([`crate::runtime::trace`]), merges them
//! into one order consistent with causality, and replays that order through the model's
//! `ActorModel` ([`MasterSlaveConfig::into_model`]). Every recorded step must be a transition
//! the model allows from the replayed state, with exactly the commands the runtime recorded,
//! and every `Always` property of the model must hold on every replayed state. The first
//! step that fails is reported with the model's state of that node before and after it.
//!
//! ```text
//!  node-0.0.jsonl  node-1.0.jsonl  node-1.1.jsonl ...      (one file per incarnation)
//!        │               │               │
//!        └──── merge: a node's steps in order; a receive after the send it names ────┐
//!                                                                                      ▼
//!   ActorModel (the model's own actors, network, crash/recover, ghost history)  ◀── replay
//!        │  per step: allowed? same commands? every Always property still true?
//!        ▼
//!   Report, or the first Divergence
//! ```
//!
//! # How a recorded step maps to a model action
//! - `Start` of incarnation 0: the model's initial state (storage must be empty).
//! - `Start` of a later incarnation: `Crash` then `Recover`; the storage the node loaded
//!   from disk must be the storage the model holds for it (its last replayed save).
//! - `Msg` from a node: `Deliver` of the message the named send carried (the model's network
//!   is the unordered duplicating one, so a delivered message can be delivered again: the
//!   runtime's duplication and reordering are transitions it allows). `Msg` from a client:
//!   a client is the environment, so its message is delivered as is.
//! - `Timer`: `Timeout`, allowed only while the model has that timer set.
//!
//! A node killed in the middle of a step may have recorded the step without making its save
//! durable (the driver makes a step's save durable before the step's first send). When the
//! next incarnation loaded the storage from before that step, the step is treated as never
//! taken, provided no message it sent was ever received: a received message from a step
//! whose save was lost is exactly a send before the save was durable, and is reported.
//!
//! # Data
//! The model's properties are written for its small store [`ModelKv`] (`u8` keys and
//! values), the runtime's store is [`KvStore`] (string keys, byte values). The replay renames
//! every key and every value one-to-one onto `u8`s, in the order they first appear. The
//! actors never look inside data but through the store's delta algebra (apply, compose,
//! diff), which commutes with a one-to-one renaming, so the renamed run is a run of the
//! model's actors and the properties hold on one exactly when they hold on the other. A run
//! with more than 256 distinct keys or values cannot be renamed and is refused.

use crate::master_slave::node::MASTER_ID;
use crate::runtime::conformance::{self, clip};
pub use crate::runtime::conformance::{ConformanceError, Divergence};
use crate::runtime::storage::KvStore;
use crate::runtime::trace::{self, Cmd, Input, SendId};
use crate::runtime::transport::CLIENT_ID_MIN;
use replicore_model::master_slave::master::{Pending, Queued};
use replicore_model::master_slave::master_user::{ClientEntry, MasterUser, Step};
use replicore_model::master_slave::model::{
    MasterSlaveModel, MasterSlaveState, StorageFault, props,
};
use replicore_model::master_slave::slave_user::SlaveUser;
use replicore_model::master_slave::{
    ClientMsg, MasterSlaveConfig, MasterStorage, Msg, NetworkKind, NodeState, Saved, ServiceMsg,
    SlaveStorage, Timer,
};
use replicore_model::store::{KvDelta, KvOp, ModelKv};
use serde::{Deserialize, Serialize};
use stateright::actor::{Actor, ActorModelAction, Command, Id, Network, Out};
use stateright::{Expectation, Model};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// The configuration a protocol-1 node records in its header.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct NodeMeta {
    /// How many slaves the cluster has.
    pub slaves: u64,
    /// The master's delta history bound.
    pub history: usize,
}

/// A recorded step of protocol 1 over the shipped store.
pub type RecordedStep = trace::Step<Msg<KvStore>, Timer, Saved<KvStore>>;

/// One incarnation's trace.
pub type Incarnation = conformance::Incarnation<Msg<KvStore>, Timer, Saved<KvStore>>;

/// Every trace of a run, by node, incarnations in order.
#[derive(Clone, Debug, Default)]
pub struct Traces {
    /// Node id → incarnations 0, 1, ...
    pub nodes: BTreeMap<u64, Vec<Incarnation>>,
    /// The cluster's configuration, the same in every header.
    pub meta: Option<NodeMeta>,
}

/// What a conforming replay covered.
#[derive(Clone, Debug, Default, Eq, PartialEq, Serialize)]
pub struct Report {
    /// Recorded steps replayed (starts, messages, timers).
    pub steps: usize,
    /// Restarts (later incarnations).
    pub restarts: usize,
    /// Messages from nodes delivered.
    pub deliveries: usize,
    /// Client messages delivered.
    pub client_inputs: usize,
    /// Timers fired.
    pub timeouts: usize,
    /// Steps recorded by a killed node whose save never became durable (treated as not taken).
    pub unsaved_steps: usize,
    /// Restarts of a slave whose store was lost or found damaged (the model's storage
    /// faults, [`StorageFault`]).
    pub storage_faults: usize,
    /// Replayed states on which every `Always` property was evaluated.
    pub states_checked: usize,
    /// The `Always` properties evaluated.
    pub properties: Vec<&'static str>,
    /// Whether the final state is converged (no node down, nothing undecided, every slave at
    /// the master's version).
    pub converged: bool,
    /// The master's committed version at the end.
    pub final_version: u64,
    /// Distinct keys and values seen.
    pub keys: usize,
    /// Distinct values seen.
    pub values: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conforms: {} steps ({} deliveries, {} client inputs, {} timeouts, {} restarts, \
             {} unsaved steps of killed nodes, {} storage faults), {} properties held on {} \
             states, final version {}{}",
            self.steps,
            self.deliveries,
            self.client_inputs,
            self.timeouts,
            self.restarts,
            self.unsaved_steps,
            self.storage_faults,
            self.properties.len(),
            self.states_checked,
            self.final_version,
            if self.converged { ", converged" } else { "" }
        )
    }
}

impl Traces {
    /// Reads every `node-<id>.<incarnation>.jsonl` file of `dir`
    /// ([`conformance::read_dir`]) and the cluster's configuration from their headers.
    pub fn read_dir(dir: &Path) -> Result<Self, ConformanceError> {
        let nodes = conformance::read_dir(dir)?;
        let mut traces = Traces { nodes, meta: None };
        for incarnation in traces.nodes.values().flatten() {
            let malformed = |detail: String| ConformanceError::Malformed {
                path: dir.join(trace::file_name(
                    incarnation.header.node,
                    incarnation.header.incarnation,
                )),
                detail,
            };
            let meta: NodeMeta = serde_json::from_value(incarnation.header.meta.clone())
                .map_err(|e| malformed(format!("header meta: {e}")))?;
            match &traces.meta {
                Some(m) if *m != meta => {
                    return Err(malformed(format!(
                        "cluster config {meta:?} differs from another node's {m:?}"
                    )));
                }
                _ => traces.meta = Some(meta),
            }
        }
        Ok(traces)
    }
}

/// Renames the runtime's keys and values one-to-one onto the model's `u8`s.
#[derive(Default)]
struct Renamer {
    keys: HashMap<String, u8>,
    values: HashMap<Vec<u8>, u8>,
}

type Renamed<T> = Result<T, String>;

impl Renamer {
    fn key(&mut self, k: &str) -> Renamed<u8> {
        if let Some(x) = self.keys.get(k) {
            return Ok(*x);
        }
        let x = u8::try_from(self.keys.len()).map_err(|_| {
            "the run uses more than 256 distinct keys; conformance renames keys one-to-one onto \
             the model's u8 keys"
                .to_string()
        })?;
        self.keys.insert(k.to_string(), x);
        Ok(x)
    }

    fn value(&mut self, v: &[u8]) -> Renamed<u8> {
        if let Some(x) = self.values.get(v) {
            return Ok(*x);
        }
        let x = u8::try_from(self.values.len()).map_err(|_| {
            "the run uses more than 256 distinct values; conformance renames values one-to-one \
             onto the model's u8 values"
                .to_string()
        })?;
        self.values.insert(v.to_vec(), x);
        Ok(x)
    }

    fn data(&mut self, s: &KvStore) -> Renamed<ModelKv> {
        let mut out = ModelKv::default();
        for (k, v) in &s.entries {
            out.entries.insert(self.key(k)?, self.value(v)?);
        }
        Ok(out)
    }

    fn delta(&mut self, d: &KvDelta<String, Vec<u8>>) -> Renamed<KvDelta<u8, u8>> {
        let mut out = KvDelta::default();
        for (k, v) in &d.changes {
            let v = match v {
                Some(v) => Some(self.value(v)?),
                None => None,
            };
            out.changes.insert(self.key(k)?, v);
        }
        Ok(out)
    }

    fn op(&mut self, o: &KvOp<String, Vec<u8>>) -> Renamed<KvOp<u8, u8>> {
        Ok(match o {
            KvOp::Put(k, v) => KvOp::Put(self.key(k)?, self.value(v)?),
            KvOp::Delete(k) => KvOp::Delete(self.key(k)?),
        })
    }

    fn step(&mut self, s: &Step<KvStore>) -> Renamed<Step<ModelKv>> {
        Ok(Step {
            prior: s.prior,
            new: s.new,
            delta: self.delta(&s.delta)?,
        })
    }

    fn client(&mut self, m: &ClientMsg<KvStore>) -> Renamed<ClientMsg<ModelKv>> {
        Ok(match m {
            ClientMsg::Update { req, op, mode } => ClientMsg::Update {
                req: *req,
                op: self.op(op)?,
                mode: *mode,
            },
            ClientMsg::Rollback { req } => ClientMsg::Rollback { req: *req },
            ClientMsg::Committed { req, version } => ClientMsg::Committed {
                req: *req,
                version: *version,
            },
            ClientMsg::Aborted {
                req,
                version,
                reason,
            } => ClientMsg::Aborted {
                req: *req,
                version: *version,
                reason: *reason,
            },
        })
    }

    fn msg(&mut self, m: &Msg<KvStore>) -> Renamed<Msg<ModelKv>> {
        use ServiceMsg as S;
        Ok(match m {
            Msg::Client(c) => Msg::Client(self.client(c)?),
            Msg::Service(s) => Msg::Service(match s {
                S::Announce { prior, new, delta } => S::Announce {
                    prior: *prior,
                    new: *new,
                    delta: match delta {
                        Some(d) => Some(self.delta(d)?),
                        None => None,
                    },
                },
                S::DeltaRequest { from } => S::DeltaRequest { from: *from },
                S::Delta { from, to, delta } => S::Delta {
                    from: *from,
                    to: *to,
                    delta: self.delta(delta)?,
                },
                S::Snapshot { from, to, data } => S::Snapshot {
                    from: *from,
                    to: *to,
                    data: self.data(data)?,
                },
                S::Prepare { prior, new, delta } => S::Prepare {
                    prior: *prior,
                    new: *new,
                    delta: self.delta(delta)?,
                },
                S::Prepared { version } => S::Prepared { version: *version },
                S::Refused { version } => S::Refused { version: *version },
                S::Commit { version } => S::Commit { version: *version },
                S::Abort { version } => S::Abort { version: *version },
                S::Heartbeat(b) => S::Heartbeat(*b),
                S::HeartbeatAck(b) => S::HeartbeatAck(*b),
                S::Recover => S::Recover,
                S::Report {
                    version,
                    data,
                    seen,
                } => S::Report {
                    version: *version,
                    data: self.data(data)?,
                    seen: *seen,
                },
            }),
        })
    }

    fn saved(&mut self, s: &Saved<KvStore>) -> Renamed<Saved<ModelKv>> {
        Ok(match s {
            Saved::Master(m) => Saved::Master(MasterStorage {
                user: MasterUser {
                    data: self.data(&m.user.data)?,
                    version: m.user.version,
                    next_version: m.user.next_version,
                    history: m
                        .user
                        .history
                        .iter()
                        .map(|s| self.step(s))
                        .collect::<Renamed<_>>()?,
                    clients: m
                        .user
                        .clients
                        .iter()
                        .map(|(id, e)| {
                            Ok((
                                *id,
                                ClientEntry {
                                    next_req: e.next_req,
                                    last_reply: match &e.last_reply {
                                        Some(r) => Some(self.client(r)?),
                                        None => None,
                                    },
                                },
                            ))
                        })
                        .collect::<Renamed<_>>()?,
                },
                pending: match &m.pending {
                    Some(p) => Some(Pending {
                        members: p
                            .members
                            .iter()
                            .map(|m| {
                                Ok(Queued {
                                    client: m.client,
                                    req: m.req,
                                    op: self.op(&m.op)?,
                                    mode: m.mode,
                                })
                            })
                            .collect::<Renamed<_>>()?,
                        step: self.step(&p.step)?,
                    }),
                    None => None,
                },
                last_decision: m.last_decision,
            }),
            Saved::Slave(s) => Saved::Slave(SlaveStorage {
                user: SlaveUser {
                    version: s.user.version,
                    data: self.data(&s.user.data)?,
                    prepared: match &s.user.prepared {
                        Some(p) => Some(self.step(p)?),
                        None => None,
                    },
                    decided: s.user.decided,
                },
                lost: s.lost,
            }),
            Saved::MasterLost => Saved::MasterLost,
        })
    }
}

/// A command in a form both sides can be compared in (timer durations are not recorded).
#[derive(Clone, Debug, Eq, PartialEq)]
enum Cmp {
    Send(u64, Msg<ModelKv>),
    Save(Saved<ModelKv>),
    SetTimer(Timer),
    CancelTimer(Timer),
}

type ModelActor = replicore_model::master_slave::Node<ModelKv>;

fn model_cmds(out: &Out<ModelActor>) -> Vec<Cmp> {
    out.iter()
        .filter_map(|c| match c {
            Command::Send(dst, msg) => Some(Cmp::Send(usize::from(*dst) as u64, msg.clone())),
            Command::Save(s) => Some(Cmp::Save(s.clone())),
            Command::SetTimer(t, _) => Some(Cmp::SetTimer(*t)),
            Command::CancelTimer(t) => Some(Cmp::CancelTimer(*t)),
            Command::ChooseRandom(..) => None,
        })
        .collect()
}

/// A message some replayed step sent: (src, dst, renamed message).
type Sent = (u64, u64, Msg<ModelKv>);

/// The replay of one run.
struct Replay<'t> {
    traces: &'t Traces,
    model: MasterSlaveModel,
    /// The model's `Always` properties, checked after every step.
    always: Vec<stateright::Property<MasterSlaveModel>>,
    state: MasterSlaveState,
    renamer: Renamer,
    sends: HashMap<SendId, Sent>,
    received: HashSet<SendId>,
    report: Report,
    nodes: u64,
}

/// Where a step sits in the traces.
#[derive(Clone, Copy)]
struct At {
    node: u64,
    inc: usize,
    index: usize,
}

impl<'t> Replay<'t> {
    fn new(traces: &'t Traces) -> Result<Self, ConformanceError> {
        let meta = traces
            .meta
            .clone()
            .ok_or_else(|| ConformanceError::Unsupported("no traces".into()))?;
        let slaves = usize::try_from(meta.slaves)
            .map_err(|_| ConformanceError::Unsupported("too many slaves".into()))?;
        let cfg = MasterSlaveConfig {
            slaves,
            script: Vec::new(),
            clients: 1,
            network: NetworkKind::UnorderedDuplicating,
            lossy: false,
            own_keys: false,
            max_crashes: slaves + 1,
            history_bound: meta.history,
            // Every restart may find a slave's store lost or damaged; the model's bound only
            // keeps a search finite.
            disk_faults: usize::MAX,
            master_faults: true,
            mutant: None,
        };
        let model = cfg.into_model();
        let state = model.init_states().pop().ok_or_else(|| {
            ConformanceError::Unsupported("the model has no initial state".into())
        })?;
        if let Some(node) = traces.nodes.keys().find(|n| **n > meta.slaves) {
            return Err(ConformanceError::Unsupported(format!(
                "node {node} is not in a cluster of {} slaves",
                meta.slaves
            )));
        }
        let received = traces
            .nodes
            .values()
            .flatten()
            .flat_map(|inc| &inc.steps)
            .filter_map(|s| match &s.input {
                Input::Msg { send, .. } => *send,
                _ => None,
            })
            .collect();
        // The wrapper's own properties: the actor model inside it carries none.
        let always: Vec<_> = Model::properties(&model)
            .into_iter()
            .filter(|p| p.expectation == Expectation::Always)
            .collect();
        let properties = always.iter().map(|p| p.name).collect();
        Ok(Replay {
            traces,
            model,
            always,
            state,
            renamer: Renamer::default(),
            sends: HashMap::new(),
            received,
            report: Report {
                properties,
                ..Report::default()
            },
            nodes: meta.slaves,
        })
    }

    fn step(&self, at: At) -> &'t RecordedStep {
        &self.traces.nodes[&at.node][at.inc].steps[at.index]
    }

    fn node_state(&self, node: u64) -> String {
        let i = node as usize;
        let text = format!(
            "{}{:?}",
            if self.state.crashed[i] {
                "(crashed) "
            } else {
                ""
            },
            self.state.actor_states[i]
        );
        clip(text)
    }

    fn diverge(
        &self,
        at: At,
        reason: String,
        before: String,
        commands: Option<(String, String)>,
    ) -> ConformanceError {
        let step = self.step(at);
        ConformanceError::Diverged(Box::new(Divergence {
            step: format!("node {} incarnation {} step {}", at.node, at.inc, step.n),
            input: clip(format!("{:?}", step.input)),
            reason,
            before,
            after: self.node_state(at.node),
            commands,
            steps_before: self.report.steps,
        }))
    }

    /// Whether step `at` can be replayed now: a message from a node waits for its send.
    fn ready(&self, at: At) -> bool {
        match &self.step(at).input {
            Input::Msg { send: Some(id), .. } => self.sends.contains_key(id),
            _ => true,
        }
    }

    fn renamed<T>(&self, at: At, r: Renamed<T>) -> Result<T, ConformanceError> {
        r.map_err(|e| {
            let step = self.step(at);
            ConformanceError::Unsupported(format!(
                "node {} incarnation {} step {}: {e}",
                at.node, at.inc, step.n
            ))
        })
    }

    fn recorded_cmds(&mut self, at: At) -> Result<Vec<Cmp>, ConformanceError> {
        let step = self.step(at);
        let mut out = Vec::with_capacity(step.out.len());
        for c in &step.out {
            let r = match c {
                Cmd::Send { dst, msg, .. } => self.renamer.msg(msg).map(|m| Cmp::Send(*dst, m)),
                Cmd::Save { storage } => self.renamer.saved(storage).map(Cmp::Save),
                Cmd::SetTimer { timer } => Ok(Cmp::SetTimer(*timer)),
                Cmd::CancelTimer { timer } => Ok(Cmp::CancelTimer(*timer)),
            };
            out.push(self.renamed(at, r)?);
        }
        Ok(out)
    }

    /// Replays one step; `next_start` is the storage the node's next incarnation loaded, when
    /// this is the last step of an incarnation that has a successor.
    fn apply(&mut self, at: At) -> Result<(), ConformanceError> {
        let step = self.step(at);
        let i = at.node as usize;
        let id = Id::from(i);
        let before = self.node_state(at.node);
        let mut out = Out::new();
        // The model's next state of this node, when the step changes it.
        let mut next_node: Option<NodeState<ModelKv>> = None;
        let action = match &step.input {
            Input::Start { storage } => {
                let loaded = match storage {
                    Some(s) => Some({
                        let r = self.renamer.saved(s);
                        self.renamed(at, r)?
                    }),
                    None => None,
                };
                if at.inc == 0 {
                    if loaded.is_some() {
                        return Err(ConformanceError::Unsupported(format!(
                            "node {} started from a non-empty data directory; conformance \
                             replays runs traced from their very first start",
                            at.node
                        )));
                    }
                    // The model's initial state already ran every actor's first start.
                    self.model.actors[i].on_start(id, &None, &mut out);
                    None
                } else {
                    self.report.restarts += 1;
                    let expected = self.state.actor_storages[i].clone();
                    let fault = if loaded == expected {
                        None
                    } else if let Some(fault) = storage_fault(at.node, &loaded, &expected) {
                        Some(fault)
                    } else {
                        return Err(self.diverge(
                            at,
                            "the storage loaded at restart is not the model's saved storage \
                             (a save was lost, or made after a message revealed it), nor a \
                             slave's store lost or found damaged"
                                .into(),
                            before,
                            Some((clip(format!("{loaded:?}")), clip(format!("{expected:?}")))),
                        ));
                    };
                    self.state = self
                        .model
                        .next_state(&self.state, ActorModelAction::Crash(id))
                        .unwrap_or_else(|| self.state.clone());
                    // The crashed state is a state of the run too (monotonic versions are
                    // judged on it).
                    self.check_properties(at, before.clone())?;
                    if let Some(fault) = fault {
                        // The model's own storage fault, taken while the slave is down; its
                        // properties are judged on the state after it as on any other.
                        let Some(next) = self.model.next_state(&self.state, fault.action(id))
                        else {
                            return Err(self.diverge(
                                at,
                                format!(
                                    "the model allows no {} of node {} here",
                                    fault.name(),
                                    at.node
                                ),
                                before,
                                None,
                            ));
                        };
                        self.state = next;
                        self.report.storage_faults += 1;
                        self.check_properties(at, before.clone())?;
                    }
                    self.model.actors[i].on_start(id, &loaded, &mut out);
                    Some(ActorModelAction::Recover(id))
                }
            }
            Input::Msg { src, send, msg } => {
                let msg = {
                    let r = self.renamer.msg(msg);
                    self.renamed(at, r)?
                };
                if self.state.crashed[i] {
                    return Err(self.diverge(
                        at,
                        "a crashed node took a step".into(),
                        before,
                        None,
                    ));
                }
                let from_node = *src <= self.nodes;
                match send {
                    Some(send) => {
                        let expected = (*src, at.node, msg.clone());
                        match self.sends.get(send) {
                            Some(sent) if *sent == expected => {}
                            sent => {
                                return Err(self.diverge(
                                    at,
                                    format!(
                                        "the message received is not the one send {send:?} carried"
                                    ),
                                    before,
                                    Some((
                                        clip(format!("{expected:?}")),
                                        clip(format!("{sent:?}")),
                                    )),
                                ));
                            }
                        }
                        self.report.deliveries += 1;
                    }
                    None if from_node => {
                        return Err(self.diverge(
                            at,
                            format!("a message from node {src} does not name its send (is node {src} traced?)"),
                            before,
                            None,
                        ));
                    }
                    None => {
                        if *src < CLIENT_ID_MIN && *src <= self.nodes + 1 {
                            // Clients are outside the model's actors; the model's own client
                            // id is taken by its scripted client.
                            return Err(ConformanceError::Unsupported(format!(
                                "client id {src} collides with the model's actor ids"
                            )));
                        }
                        self.report.client_inputs += 1;
                    }
                }
                let current = &*self.state.actor_states[i];
                let mut cow = Cow::Borrowed(current);
                self.model.actors[i].on_msg(
                    id,
                    &mut cow,
                    Id::from(*src as usize),
                    msg.clone(),
                    &mut out,
                );
                if let Cow::Owned(next) = cow {
                    next_node = Some(next);
                }
                Some(ActorModelAction::Deliver {
                    src: Id::from(*src as usize),
                    dst: id,
                    msg,
                })
            }
            Input::Timer { timer } => {
                if self.state.crashed[i] || !self.state.timers_set[i].iter().any(|t| t == timer) {
                    return Err(self.diverge(
                        at,
                        format!("timer {timer:?} fired but the model has it unset"),
                        before,
                        None,
                    ));
                }
                self.report.timeouts += 1;
                let current = &*self.state.actor_states[i];
                let mut cow = Cow::Borrowed(current);
                self.model.actors[i].on_timeout(id, &mut cow, timer, &mut out);
                if let Cow::Owned(next) = cow {
                    next_node = Some(next);
                }
                Some(ActorModelAction::Timeout(id, *timer))
            }
        };
        let recorded = self.recorded_cmds(at)?;
        let expected = model_cmds(&out);
        if recorded != expected {
            let mut e = self.diverge(
                at,
                "the runtime's commands are not the model's".into(),
                before,
                Some((clip(format!("{recorded:?}")), clip(format!("{expected:?}")))),
            );
            if let (ConformanceError::Diverged(d), Some(next)) = (&mut e, &next_node) {
                d.after = clip(format!("{next:?}"));
            }
            return Err(e);
        }
        if let Some(action) = action
            && let Some(next) = self.model.next_state(&self.state, action)
        {
            self.state = next;
        }
        // Every sent envelope is in `sends`; the model's network need not keep them too.
        self.state.network = Network::new_unordered_duplicating([]);
        let mut sends = recorded.iter().filter_map(|c| match c {
            Cmp::Send(dst, msg) => Some((*dst, msg)),
            _ => None,
        });
        for c in &step.out {
            if let Cmd::Send { id, .. } = c
                && let Some((dst, msg)) = sends.next()
            {
                self.sends.insert(*id, (at.node, dst, msg.clone()));
            }
        }
        self.report.steps += 1;
        self.check_properties(at, before)
    }

    fn check_properties(&mut self, at: At, before: String) -> Result<(), ConformanceError> {
        self.report.states_checked += 1;
        let failed = self
            .always
            .iter()
            .find(|p| !(p.condition)(&self.model, &self.state))
            .map(|p| p.name);
        match failed {
            Some(name) => Err(self.diverge(
                at,
                format!("property \"{name}\" fails after this step"),
                before,
                None,
            )),
            None => Ok(()),
        }
    }

    /// The storage node `at.node`'s next incarnation loaded, when `at` is the last step of an
    /// incarnation that has a successor.
    fn next_loaded(&mut self, at: At) -> Result<Option<Option<Saved<ModelKv>>>, ConformanceError> {
        let incs = &self.traces.nodes[&at.node];
        if at.index + 1 != incs[at.inc].steps.len() || at.inc + 1 >= incs.len() {
            return Ok(None);
        }
        let Some(first) = incs[at.inc + 1].steps.first() else {
            return Ok(None);
        };
        let Input::Start { storage } = &first.input else {
            return Ok(None);
        };
        Ok(Some(match storage {
            Some(s) => Some({
                let r = self.renamer.saved(s);
                self.renamed(at, r)?
            }),
            None => None,
        }))
    }

    /// Replays the last step of a killed incarnation, which may not have been made durable.
    fn apply_last(&mut self, at: At) -> Result<(), ConformanceError> {
        let has_save = self
            .step(at)
            .out
            .iter()
            .any(|c| matches!(c, Cmd::Save { .. }));
        let loaded = if has_save {
            self.next_loaded(at)?
        } else {
            None
        };
        let Some(loaded) = loaded else {
            return self.apply(at);
        };
        let i = at.node as usize;
        let pre = self.state.actor_storages[i].clone();
        let snapshot = (self.state.clone(), self.report.clone());
        let before = self.node_state(at.node);
        self.apply(at)?;
        if self.state.actor_storages[i] == loaded || pre != loaded {
            // Durable (or a mismatch the restart itself reports).
            return Ok(());
        }
        // The save of this step never reached the disk: the step was cut by the kill.
        let step = self.step(at);
        let leaked: Vec<SendId> = step
            .out
            .iter()
            .filter_map(|c| match c {
                Cmd::Send { id, .. } if self.received.contains(id) => Some(*id),
                _ => None,
            })
            .collect();
        if let Some(first) = leaked.first() {
            return Err(self.diverge(
                at,
                format!(
                    "node {} was killed before this step's save was durable, yet its send \
                     {first:?} was received: a message left before the save that it reveals",
                    at.node
                ),
                before,
                None,
            ));
        }
        let (state, mut report) = snapshot;
        for c in &step.out {
            if let Cmd::Send { id, .. } = c {
                self.sends.remove(id);
            }
        }
        report.unsaved_steps += 1;
        self.state = state;
        self.report = report;
        Ok(())
    }

    fn run(mut self) -> Result<Report, ConformanceError> {
        // A cursor per node over its incarnations' steps.
        let mut cursors: BTreeMap<u64, (usize, usize)> =
            self.traces.nodes.keys().map(|n| (*n, (0, 0))).collect();
        loop {
            let mut progressed = false;
            let nodes: Vec<u64> = cursors.keys().copied().collect();
            for node in nodes {
                loop {
                    let (inc, index) = cursors[&node];
                    let incs = &self.traces.nodes[&node];
                    if inc >= incs.len() {
                        break;
                    }
                    if index >= incs[inc].steps.len() {
                        cursors.insert(node, (inc + 1, 0));
                        continue;
                    }
                    let at = At { node, inc, index };
                    if !self.ready(at) {
                        break;
                    }
                    self.apply_last(at)?;
                    cursors.insert(node, (inc, index + 1));
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        if let Some((node, (inc, index))) = cursors
            .iter()
            .find(|(n, (inc, _))| *inc < self.traces.nodes[n].len())
        {
            let at = At {
                node: *node,
                inc: *inc,
                index: *index,
            };
            let waits = match &self.step(at).input {
                Input::Msg { send, .. } => format!("{send:?}"),
                _ => "?".into(),
            };
            let before = self.node_state(*node);
            return Err(self.diverge(
                at,
                format!("it receives send {waits}, which no trace records"),
                before,
                None,
            ));
        }
        let cfg = self.model.cfg.clone();
        self.report.converged = props::converged(&cfg, &self.state);
        self.report.final_version = props::master(&self.state).map_or(0, |m| m.user.version);
        self.report.keys = self.renamer.keys.len();
        self.report.values = self.renamer.values.len();
        Ok(self.report)
    }
}

/// The storage fault of the model that explains a restart of `node` loading `loaded` where
/// the model holds `expected`: a slave's store gone and created again (`None`), or found
/// damaged and discarded by the runtime ([`Saved::after_damage`]). The model's damaged copy
/// keeps the rest of the saved state beside the flag ([`StorageFault::apply`]); the slave's
/// `on_start` discards either, and the replay runs it on what was really loaded. A master
/// whose store was lost or damaged restarts from [`Saved::MasterLost`] (`--recover`, or its
/// damaged store discarded), the model's `Lost` fault of the master; any other master
/// restart that did not load its last save is a divergence.
fn storage_fault(
    node: u64,
    loaded: &Option<Saved<ModelKv>>,
    expected: &Option<Saved<ModelKv>>,
) -> Option<StorageFault> {
    if node == MASTER_ID {
        return (loaded == &Some(Saved::MasterLost))
            .then(|| {
                StorageFault::Lost
                    .apply(expected)
                    .map(|_| StorageFault::Lost)
            })
            .flatten();
    }
    match loaded {
        None => StorageFault::Lost
            .apply(expected)
            .map(|_| StorageFault::Lost),
        Some(l) if Some(l) == Saved::after_damage(false).as_ref() => StorageFault::Damaged
            .apply(expected)
            .map(|_| StorageFault::Damaged),
        Some(_) => None,
    }
}

/// Replays `traces` through the model; the report, or the first divergence.
pub fn check(traces: &Traces) -> Result<Report, ConformanceError> {
    Replay::new(traces)?.run()
}

/// Reads the traces in `dir` and replays them ([`check`]).
pub fn check_dir(dir: &Path) -> Result<Report, ConformanceError> {
    check(&Traces::read_dir(dir)?)
}
