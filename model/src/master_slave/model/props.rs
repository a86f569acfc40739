//! The property names and predicates of protocol 1. Each predicate is a plain function of a
//! model state, so the checker, the runtime tests and trace conformance call the same code.

use super::{MasterSlaveConfig, NodeState, SystemState};
use crate::master_slave::Saved;
use crate::master_slave::master::MasterState;
use crate::master_slave::master_user::Step;
use crate::master_slave::slave::SlaveState;
use crate::store::Store;
use stateright::Expectation;
use stateright::actor::Id;

/// Safety 1: every live slave's (version, data) is the master's committed data at that
/// version; reads on a slave see nothing else.
pub const SLAVE_DATA: &str = "slave data is the master's committed data at its version";
/// Safety 2.
pub const NO_ABORTED_VISIBLE: &str = "no aborted or rolled-back update is visible on a slave";
/// Safety 3.
pub const AGREEMENT: &str = "no version is both committed and aborted";
/// Safety 4.
pub const COMMIT_VALIDITY: &str = "the master commits only after every participant voted prepared";
/// Safety 5.
pub const UNIQUE_VERSIONS: &str = "no two committed states share a version";
/// Safety 6.
pub const MONOTONIC: &str = "no node's committed version goes back across a restart";
/// Safety 7: a Prepared vote is a promise that survives a crash.
pub const DURABLE_VOTES: &str = "every undecided prepared vote is backed by a saved delta";
/// Safety 8, end to end: what clients were told against the data, with no node as the
/// reference. Catches a master that is consistently wrong (every slave agreeing with it).
pub const ACKNOWLEDGED_REPLAY: &str =
    "every committed state is the replay of the updates acknowledged up to its version";
/// Liveness, checked by Stateright's `Eventually` at terminal states.
pub const CONVERGES: &str = "every slave converges once faults stop";
/// Liveness, checked by the liveness graph check (`replicore_explore::liveness`) over the whole explored graph.
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

/// What of a checked system of protocol 1 decides which properties apply to it: the one
/// rule behind [`MasterSlaveConfig::into_model`] and [`super::AnyStoreConfig::into_model`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Shape {
    /// Some client issues a two-phase update that commits or aborts.
    pub two_phase: bool,
    /// Some client rolls an update back.
    pub rolled_back: bool,
    /// How many clients run a script.
    pub clients: usize,
    /// Some script has two or more updates.
    pub several_steps: bool,
    /// Some one-phase update lies past the history bound in its script.
    pub pruned: bool,
    /// Crashes are allowed.
    pub crashes: bool,
}

impl Shape {
    /// The properties that apply, in the order they are reported: every safety property;
    /// `Eventually` convergence where a crash cannot make it vacuous; each reachability
    /// property whose behaviour the workload can reach.
    pub(crate) fn applicable(&self) -> Vec<(Expectation, &'static str)> {
        use Expectation::{Always, Eventually, Sometimes};
        let mut all = vec![
            (Always, SLAVE_DATA),
            (Always, NO_ABORTED_VISIBLE),
            (Always, AGREEMENT),
            (Always, COMMIT_VALIDITY),
            (Always, UNIQUE_VERSIONS),
            (Always, MONOTONIC),
            (Always, DURABLE_VOTES),
            (Always, ACKNOWLEDGED_REPLAY),
        ];
        if !self.crashes {
            // With crashes allowed no state is terminal (a crash is always possible), so
            // Stateright's `Eventually` would pass vacuously: it is only added where it can
            // fail. The liveness graph check (`replicore_explore::liveness`) covers every
            // config.
            all.push((Eventually, CONVERGES));
        }
        if self.two_phase || self.rolled_back {
            all.push((Sometimes, REACH_TWO_PHASE_COMMIT));
            all.push((Sometimes, REACH_ABORT));
        }
        if self.clients >= 3 && self.two_phase {
            all.push((Sometimes, REACH_GROUP_COMMIT));
        }
        if self.rolled_back {
            all.push((Sometimes, REACH_ROLLBACK));
        }
        if self.several_steps {
            all.push((Sometimes, REACH_DELTA));
            // A slave needs a version the master no longer remembers: after a master restart
            // (history is not saved), or behind a one-phase update past the history bound (a
            // two-phase update waits for every slave, so it never leaves one two behind).
            if self.crashes || self.pruned {
                all.push((Sometimes, REACH_SNAPSHOT));
            }
        }
        if self.crashes {
            all.push((Sometimes, REACH_RECOVERY));
        }
        all
    }
}

/// The condition of each property that reads the state alone, for any model of protocol 1
/// over it; `None` for the properties whose condition also reads the config.
pub(crate) fn state_condition<M, S: Store>(name: &str) -> Option<fn(&M, &SystemState<S>) -> bool> {
    Some(match name {
        SLAVE_DATA => |_, s| slave_data(s),
        NO_ABORTED_VISIBLE => |_, s| no_aborted_visible(s),
        AGREEMENT => |_, s| agreement(s),
        COMMIT_VALIDITY => |_, s| commit_validity(s),
        UNIQUE_VERSIONS => |_, s| unique_versions(s),
        MONOTONIC => |_, s| monotonic(s),
        DURABLE_VOTES => |_, s| durable_votes(s),
        REACH_ABORT => |_, s| !s.history.aborted.is_empty(),
        REACH_GROUP_COMMIT => |_, s| s.history.group_committed,
        REACH_ROLLBACK => |_, s| s.history.rolled_back,
        REACH_DELTA => |_, s| s.history.delta_applied,
        REACH_SNAPSHOT => |_, s| s.history.snapshot_applied,
        _ => return None,
    })
}

/// Every property's stable id (for `--json` and scripts), beside its prose name: an id
/// never changes once published, the prose may.
pub const IDS: &[(&str, &str)] = &[
    ("slave-data", SLAVE_DATA),
    ("no-aborted-visible", NO_ABORTED_VISIBLE),
    ("agreement", AGREEMENT),
    ("commit-validity", COMMIT_VALIDITY),
    ("unique-versions", UNIQUE_VERSIONS),
    ("monotonic", MONOTONIC),
    ("durable-votes", DURABLE_VOTES),
    ("acknowledged-replay", ACKNOWLEDGED_REPLAY),
    ("converges", CONVERGES),
    ("convergence-reachable", CONVERGENCE_REACHABLE),
    ("reach-two-phase-commit", REACH_TWO_PHASE_COMMIT),
    ("reach-abort", REACH_ABORT),
    ("reach-rollback", REACH_ROLLBACK),
    ("reach-group-commit", REACH_GROUP_COMMIT),
    ("reach-delta", REACH_DELTA),
    ("reach-snapshot", REACH_SNAPSHOT),
    ("reach-recovery", REACH_RECOVERY),
];

/// The live master's state.
pub fn master<S: Store>(s: &SystemState<S>) -> Option<&MasterState<S>> {
    match &*s.actor_states[0] {
        NodeState::Master(m) if !s.crashed[0] => Some(m),
        _ => None,
    }
}

/// Every live slave's state.
pub fn live_slaves<S: Store>(s: &SystemState<S>) -> impl Iterator<Item = (usize, &SlaveState<S>)> {
    s.actor_states
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match &**a {
            NodeState::Slave(sl) if !s.crashed[i] => Some((i, sl)),
            _ => None,
        })
}

/// Safety 1.
pub fn slave_data<S: Store>(s: &SystemState<S>) -> bool {
    live_slaves(s).all(|(_, sl)| {
        let v = sl.user.version;
        if v == 0 {
            sl.user.data == S::default()
        } else {
            s.history.committed.get(&v) == Some(&sl.user.data)
        }
    })
}

/// Safety 8 (claims 1, 2 and 9 of seed 000: the master user's updates are what is
/// replicated): replaying, from the empty store, the operations the clients were told
/// committed, version by version, gives every committed state the master revealed, and the
/// live master's own data. The members of one group commit may be applied in any order.
///
/// The replay stops at the first version whose fate no client has learned yet (neither an
/// acknowledgement nor an abort was sent), or whose client is not one of the config's: the
/// operation that made it is not known.
pub fn acknowledged_replay(
    cfg: &MasterSlaveConfig,
    s: &SystemState<crate::store::ModelKv>,
) -> bool {
    acknowledged_replay_of(s, |client, req| client_update(cfg, client, req))
}

/// [`acknowledged_replay`] on any store: `update(client, req)` is the operation `client`'s
/// request `req` carries, if the checked system knows it.
pub fn acknowledged_replay_of<S: Store>(
    s: &SystemState<S>,
    update: impl Fn(Id, u64) -> Option<S::Op>,
) -> bool {
    let g = &s.history;
    let master = master(s).map(|m| (m.user.version, &m.user.data));
    let last = g
        .committed
        .keys()
        .next_back()
        .copied()
        .max(master.map(|(v, _)| v))
        .unwrap_or(0);
    // Every store the acknowledged updates up to `v` can give.
    let mut candidates = vec![S::default()];
    for v in 1..=last {
        if g.aborted.contains(&v) {
            continue;
        }
        let Some(acks) = g.acked.get(&v) else { break };
        let ops: Option<Vec<S::Op>> = acks
            .iter()
            .map(|(client, req)| update(*client, *req))
            .collect();
        // A client outside the config (trace conformance replays the runtime's clients,
        // whose operations the config does not know): nothing further can be replayed.
        let Some(ops) = ops else { break };
        candidates = replays(&candidates, &ops);
        let known = g
            .committed
            .get(&v)
            .or(master.and_then(|(mv, data)| (mv == v).then_some(data)));
        if let Some(data) = known {
            if !candidates.contains(data) {
                return false;
            }
            candidates = vec![data.clone()];
        }
    }
    true
}

/// The operation `client`'s request `req` carries, if it has one.
fn client_update(
    cfg: &MasterSlaveConfig,
    client: Id,
    req: u64,
) -> Option<crate::store::KvOp<u8, u8>> {
    let c = cfg.client_ids().iter().position(|id| *id == client)?;
    let step = cfg.script.get(usize::try_from(req).ok()?)?;
    Some(cfg.client_op(c, &step.op))
}

/// Every store `ops`, applied in some order, make of one of `from`.
fn replays<S: Store>(from: &[S], ops: &[S::Op]) -> Vec<S> {
    let mut out: Vec<S> = Vec::new();
    let mut order: Vec<usize> = (0..ops.len()).collect();
    permutations(&mut order, 0, &mut |order| {
        for start in from {
            let mut data = start.clone();
            for &i in order.iter() {
                let delta = data.delta_of(&ops[i]);
                data.apply(&delta);
            }
            if !out.contains(&data) {
                out.push(data);
            }
        }
    });
    out
}

/// Calls `f` with every order of `v[k..]` (`v[..k]` kept), `v` restored after.
pub(crate) fn permutations(v: &mut [usize], k: usize, f: &mut impl FnMut(&[usize])) {
    if k == v.len() {
        f(v);
        return;
    }
    for i in k..v.len() {
        v.swap(k, i);
        permutations(v, k + 1, f);
        v.swap(k, i);
    }
}

/// Safety 2.
pub fn no_aborted_visible<S: Store>(s: &SystemState<S>) -> bool {
    live_slaves(s).all(|(_, sl)| !s.history.aborted.contains(&sl.user.version))
}

/// Safety 3: no version is both decided committed (or revealed as committed) and aborted.
pub fn agreement<S: Store>(s: &SystemState<S>) -> bool {
    s.history
        .aborted
        .iter()
        .all(|v| !s.history.committed.contains_key(v) && !s.history.two_phase_commits.contains(v))
}

/// Safety 4.
pub fn commit_validity<S: Store>(s: &SystemState<S>) -> bool {
    !s.history.commit_without_votes
}

/// Safety 5.
pub fn unique_versions<S: Store>(s: &SystemState<S>) -> bool {
    !s.history.version_reused
}

/// Safety 6. A node's version only grows while it runs (no step lowers it: the model
/// records one that does, `GhostHistory::went_back`); a crash keeps its last volatile state
/// in the model, so a crashed node whose saved version is below the version it had would
/// come back older.
///
/// A server whose storage was lost or damaged while down ([`super::StorageFault`]) is not
/// judged until it recovers: the fault, not the protocol, takes its version back.
pub fn monotonic<S: Store>(s: &SystemState<S>) -> bool {
    !s.history.went_back
        && s.actor_states.iter().enumerate().all(|(i, a)| {
            if !s.crashed[i] || s.history.faulted.contains(&Id::from(i)) {
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
/// Prepared for it holds the prepared delta (live) or has it saved (crashed). A vote whose
/// saved delta a storage fault destroyed is void, not judged (`GhostHistory::voided`).
pub fn durable_votes<S: Store>(s: &SystemState<S>) -> bool {
    s.history.voted.iter().all(|(id, v)| {
        let decided = s.history.aborted.contains(v) || s.history.two_phase_commits.contains(v);
        if decided || s.history.voided.contains(&(*id, *v)) {
            return true;
        }
        let i = usize::from(*id);
        let holds = |p: &Option<Step<S>>| p.as_ref().is_some_and(|p| p.new == *v);
        if s.crashed[i] {
            matches!(&s.actor_storages[i], Some(Saved::Slave(st)) if holds(&st.user.prepared))
        } else {
            matches!(&*s.actor_states[i], NodeState::Slave(sl) if holds(&sl.user.prepared) || sl.user.version >= *v)
        }
    })
}

/// Converged: nobody is down, the client is done, nothing is undecided, and every slave
/// holds the master's committed version and no prepared delta.
pub fn converged(cfg: &MasterSlaveConfig, s: &SystemState<crate::store::ModelKv>) -> bool {
    let clients: Vec<_> = cfg
        .client_ids()
        .into_iter()
        .map(|id| (id, cfg.script.len()))
        .collect();
    converged_of(&clients, s)
}

/// [`converged`] on any store: `clients` are the scripted clients, each with the length of
/// its script.
pub fn converged_of<S: Store>(clients: &[(Id, usize)], s: &SystemState<S>) -> bool {
    if s.crashed.iter().any(|c| *c) {
        return false;
    }
    let client_done = clients.iter().all(|(id, script_len)| {
        matches!(&*s.actor_states[usize::from(*id)],
        NodeState::Client(c) if c.next as usize >= *script_len)
    });
    let Some(m) = master(s) else { return false };
    client_done
        && m.pending.is_none()
        && live_slaves(s).all(|(_, sl)| {
            sl.user.version == m.user.version && sl.user.prepared.is_none() && sl.waiting.is_none()
        })
}

/// Reachability: some two-phase commit is applied on every slave.
pub fn two_phase_commit_everywhere(
    cfg: &MasterSlaveConfig,
    s: &SystemState<crate::store::ModelKv>,
) -> bool {
    two_phase_commit_everywhere_of(cfg.slaves, s)
}

/// [`two_phase_commit_everywhere`] on any store, with `slaves` slaves.
pub fn two_phase_commit_everywhere_of<S: Store>(slaves: usize, s: &SystemState<S>) -> bool {
    let live: Vec<_> = live_slaves(s).collect();
    live.len() == slaves
        && s.history
            .two_phase_commits
            .iter()
            .any(|v| live.iter().all(|(_, sl)| sl.user.version >= *v))
}

/// Reachability: a slave restarted from its saved state and caught up with the master.
pub fn recovered_and_converged(
    _cfg: &MasterSlaveConfig,
    s: &SystemState<crate::store::ModelKv>,
) -> bool {
    recovered_and_converged_of(s)
}

/// [`recovered_and_converged`] on any store.
pub fn recovered_and_converged_of<S: Store>(s: &SystemState<S>) -> bool {
    let Some(m) = master(s) else { return false };
    m.user.version > 0
        && live_slaves(s).any(|(_, sl)| {
            sl.recovered && sl.user.version == m.user.version && sl.user.prepared.is_none()
        })
}
