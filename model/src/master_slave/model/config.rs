//! The config of the checked system, its scripts, and the model it builds.

use super::{Ghost, MasterSlaveModel, Node, Roles, props};
use crate::master_slave::Mutant;
use crate::master_slave::client::{ScriptClient, ScriptStep, UpdateKind};
use crate::master_slave::master::MasterServer;
use crate::master_slave::slave::SlaveServer;
use crate::store::{KvOp, ModelKv, Store};
use stateright::actor::{ActorModel, Id, LossyNetwork, Network};
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
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

/// The operation a script item without an explicit one issues: update `i` puts value
/// `i + 1` at key `i % 2`, so every committed state differs from the one before it.
pub fn default_op(i: usize) -> KvOp<u8, u8> {
    KvOp::Put((i % 2) as u8, i as u8 + 1)
}

/// Parses a compact script (panics on a bad script; use [`try_script`] on user input).
pub fn script(s: &str) -> Vec<ScriptStep<ModelKv>> {
    try_script(s).expect("a valid built-in script")
}

/// Parses a compact script: comma-separated items `KIND[:OP]`.
///
/// - `KIND` is `1p` (one-phase), `2p` (two-phase) or `rb` (a two-phase update the client
///   rolls back at once). Any kind may follow any other.
/// - `OP` is `K=V` (put value `V` at key `K`, an overwrite when `K` is already set) or `-K`
///   (delete key `K`); keys and values are numbers below 16 (a key) and 256 (a value).
///   Without `OP`, item `i` issues [`default_op`]`(i)`.
///
/// For example `1p:0=1,1p:0=2,2p:-0` puts, overwrites and deletes one key.
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
            let (kind, op) = match item.split_once(':') {
                Some((kind, op)) => (kind, Some(op)),
                None => (*item, None),
            };
            let kind = match kind {
                "1p" => UpdateKind::OnePhase,
                "2p" => UpdateKind::TwoPhase,
                "rb" => UpdateKind::RolledBack,
                other => {
                    return Err(format!(
                        "unknown script item '{other}' (expected 1p, 2p or rb, optionally \
                         followed by :K=V or :-K)"
                    ));
                }
            };
            let op = match op {
                None => default_op(i),
                Some(op) => parse_op(op).map_err(|e| format!("script item '{item}': {e}"))?,
            };
            Ok(ScriptStep { op, kind })
        })
        .collect()
}

fn parse_op(op: &str) -> Result<KvOp<u8, u8>, String> {
    let key = |k: &str| match k.trim().parse::<u8>() {
        Ok(k) if k < 16 => Ok(k),
        _ => Err(format!("key '{k}' is not a number below 16")),
    };
    if let Some(k) = op.strip_prefix('-') {
        return Ok(KvOp::Delete(key(k)?));
    }
    let Some((k, v)) = op.split_once('=') else {
        return Err(format!("operation '{op}' is neither K=V nor -K"));
    };
    let v = v
        .trim()
        .parse::<u8>()
        .map_err(|_| format!("value '{v}' is not a number below 256"))?;
    Ok(KvOp::Put(key(k)?, v))
}

/// Formats a script back into its compact form: [`try_script`] of the text gives the same
/// script back.
pub fn script_text(script: &[ScriptStep<ModelKv>]) -> String {
    script
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let kind = match s.kind {
                UpdateKind::OnePhase => "1p",
                UpdateKind::TwoPhase => "2p",
                UpdateKind::RolledBack => "rb",
            };
            if s.op == default_op(i) {
                kind.to_string()
            } else {
                match s.op {
                    KvOp::Put(k, v) => format!("{kind}:{k}={v}"),
                    KvOp::Delete(k) => format!("{kind}:-{k}"),
                }
            }
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
    /// differ; with [`MasterSlaveConfig::own_keys`] its keys are shifted by `16 c` too).
    pub script: Vec<ScriptStep<ModelKv>>,
    /// How many scripted clients run the script concurrently. Three or more let two-phase
    /// requests queue behind a round and share the next one (group commit).
    pub clients: usize,
    /// The network semantics.
    pub network: NetworkKind,
    /// Whether messages can be lost.
    pub lossy: bool,
    /// Whether each client writes keys of its own (client `c`'s keys shifted by `16 c`)
    /// instead of the same keys as every other client. Shared keys make group-commit members
    /// touch the same data; own keys make a lost member visible in the data.
    pub own_keys: bool,
    /// How many servers may be down at the same time.
    pub max_crashes: usize,
    /// How many committed steps the master remembers for deltas.
    pub history_bound: usize,
    /// How many storage faults a run may have: a slave that is down may lose its saved
    /// state or find it damaged ([`super::StorageFault`]), at most this many times in all.
    /// 0 (the default) keeps every disk intact.
    pub disk_faults: usize,
    /// Whether the master's store may be lost too (issue 18), within the same bound: while
    /// the master is down and some slave holds everything it saved
    /// ([`super::system::master_copy_survives`]), its store is lost, and it rebuilds from its
    /// slaves. Off by default: with it, nothing the master counts is a floor while a fault
    /// may still come, so fewer messages are dead and the space is larger.
    pub master_faults: bool,
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
            own_keys: false,
            max_crashes: 1,
            history_bound: 1,
            disk_faults: 0,
            master_faults: false,
            mutant: None,
        }
    }
}

impl fmt::Display for MasterSlaveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "master-slave: slaves={} script={}{}{} network={}{} crashes={}{}{} history={} mutant={}",
            self.slaves,
            script_text(&self.script),
            if self.clients == 1 {
                String::new()
            } else {
                format!(" clients={}", self.clients)
            },
            if self.own_keys { " keys=own" } else { "" },
            if self.lossy { "lossy," } else { "" },
            self.network.name(),
            self.max_crashes,
            if self.disk_faults == 0 {
                String::new()
            } else {
                format!(" disk-faults={}", self.disk_faults)
            },
            if self.master_faults {
                " master-faults"
            } else {
                ""
            },
            self.history_bound,
            self.mutant.map_or("none", Mutant::name),
        )
    }
}

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

    /// Client `c`'s operation for `op`: values shifted by `16 c`, and keys too with
    /// [`MasterSlaveConfig::own_keys`].
    pub fn client_op(&self, c: usize, op: &KvOp<u8, u8>) -> KvOp<u8, u8> {
        let shift = |x: u8| x.wrapping_add((16 * c) as u8);
        let key = |k: u8| if self.own_keys { shift(k) } else { k };
        match *op {
            KvOp::Put(k, v) => KvOp::Put(key(k), shift(v)),
            KvOp::Delete(k) => KvOp::Delete(key(k)),
        }
    }

    /// Client `c`'s script (see [`MasterSlaveConfig::client_op`]).
    pub fn client_script(&self, c: usize) -> Vec<ScriptStep<ModelKv>> {
        self.script
            .iter()
            .map(|step| ScriptStep {
                op: self.client_op(c, &step.op),
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
        let mut ghost = Ghost::default();
        ghost.storage_faults_max = self.disk_faults;
        ghost.master_faults = self.master_faults;
        let scripts = (0..self.clients).map(|c| self.client_script(c)).collect();
        let system = actors(
            self.clone(),
            ghost,
            Servers {
                history_bound: self.history_bound,
                mutant: self.mutant,
                lossy: self.lossy,
                max_crashes: self.max_crashes,
            },
            scripts,
        );
        let mut model = MasterSlaveModel::new(system);

        use props::*;
        let shape = Shape {
            two_phase: self.has(UpdateKind::TwoPhase),
            rolled_back: self.has(UpdateKind::RolledBack),
            clients: self.clients,
            several_steps: self.script.len() >= 2,
            pruned: self
                .script
                .iter()
                .skip(self.history_bound)
                .any(|s| s.kind == UpdateKind::OnePhase),
            crashes: self.max_crashes > 0,
        };
        for (expectation, name) in shape.applicable() {
            let condition: fn(&MasterSlaveModel, &super::MasterSlaveState) -> bool = match name {
                ACKNOWLEDGED_REPLAY => |m, s| acknowledged_replay(&m.cfg, s),
                CONVERGES => |m, s| converged(&m.cfg, s),
                REACH_TWO_PHASE_COMMIT => |m, s| two_phase_commit_everywhere(&m.cfg, s),
                REACH_RECOVERY => |m, s| recovered_and_converged(&m.cfg, s),
                other => state_condition(other)
                    .unwrap_or_else(|| unreachable!("no condition for the property {other:?}")),
            };
            model = model.property(expectation, name, condition);
        }
        model
    }
}

/// What the servers of a checked system of protocol 1 are given, beside their ids.
pub(crate) struct Servers {
    pub history_bound: usize,
    pub mutant: Option<Mutant>,
    pub lossy: bool,
    pub max_crashes: usize,
}

/// Protocol 1's actors (a master, its slaves, one scripted client per script), network,
/// crashes and ghost recorders, for any store and config: the one builder behind
/// [`MasterSlaveConfig::into_model`] and [`super::AnyStoreConfig::into_model`].
pub(crate) fn actors<S: Store, C: Roles + Clone>(
    cfg: C,
    ghost: Ghost<S>,
    servers: Servers,
    scripts: Vec<Vec<ScriptStep<S>>>,
) -> ActorModel<Node<S>, C, Ghost<S>> {
    let master = cfg.master_id();
    let slaves = cfg.slave_ids();
    let network = cfg.network();
    let tick = Duration::from_millis(10)..Duration::from_millis(20);
    ActorModel::new(cfg, ghost)
        .actor(Node::Master(MasterServer {
            slaves: slaves.clone(),
            history_bound: servers.history_bound,
            heartbeat: tick.clone(),
            mutant: servers.mutant,
            store: PhantomData,
        }))
        .actors(slaves.iter().map(|_| {
            Node::Slave(SlaveServer {
                master,
                mutant: servers.mutant,
                store: PhantomData,
            })
        }))
        .actors(scripts.into_iter().map(|script| {
            Node::Client(ScriptClient {
                master,
                script,
                timeout_ms: 100,
                retry: tick.clone(),
            })
        }))
        .init_network(match network {
            NetworkKind::UnorderedDuplicating => Network::new_unordered_duplicating([]),
            NetworkKind::UnorderedNonDuplicating => Network::new_unordered_nonduplicating([]),
            NetworkKind::Ordered => Network::new_ordered([]),
        })
        .lossy_network(if servers.lossy {
            LossyNetwork::Yes
        } else {
            LossyNetwork::No
        })
        .max_crashes(servers.max_crashes)
        .record_msg_out(Ghost::record_out)
        .record_msg_in(Ghost::record_in)
        // Clients are not servers of the fault model: they never crash. On networks
        // that keep every copy (non-duplicating, ordered), timers re-send into a growing
        // multiset, so the search is bounded by messages in flight.
        .within_boundary(|cfg, state| {
            cfg.client_ids()
                .iter()
                .all(|c| !state.crashed[usize::from(*c)])
                && (cfg.network() == NetworkKind::UnorderedDuplicating
                    || state.network.len() <= cfg.in_flight_bound())
        })
}
