//! The search reductions of protocol 1: dead messages, symmetry over slaves, canonical
//! fingerprints, and the jump that loses every message at once.

use super::{MasterSlaveModel, MasterSlaveState, NodeState, props};
use crate::master_slave::Saved;
use crate::master_slave::msg::{Beat, ClientMsg, Msg, ServiceMsg};
use crate::store::{ModelKv, Version};
use stateright::actor::{ActorModelState, Envelope, Id, Network};
use stateright::{Expectation, Rewrite, RewritePlan};
use std::collections::BTreeSet;

/// Whether a storage fault may still happen in a run through `s`: while one may, every
/// slave's saved state may be replaced by an empty one, so its floors are 0.
fn faults_left(s: &MasterSlaveState) -> bool {
    s.history.storage_faults < s.history.storage_faults_max
}

/// Whether the master's store may still be lost in a run through `s`.
fn master_faults_left(s: &MasterSlaveState) -> bool {
    s.history.master_faults && faults_left(s)
}

/// The lowest committed version slave `i` can ever hold again: its version only grows while
/// it runs, and a restart resumes from its saved version (or from nothing, after a storage
/// fault).
fn slave_floor(s: &MasterSlaveState, i: usize) -> Version {
    if faults_left(s) {
        return 0;
    }
    let saved = s.actor_storages[i].as_ref().map_or(0, Saved::version);
    match &*s.actor_states[i] {
        NodeState::Slave(sl) => sl.user.version.min(saved),
        _ => 0,
    }
}

/// The lowest "decided" version slave `i` can ever hold again (it only grows and is saved).
fn decided_floor(s: &MasterSlaveState, i: usize) -> Version {
    if faults_left(s) {
        return 0;
    }
    let saved = match &s.actor_storages[i] {
        // A copy found damaged restarts empty.
        Some(Saved::Slave(st)) if st.lost => 0,
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
/// counter by one at most, which `is_dead` allows for.) While a storage fault may still
/// come, the master's store may be lost and rebuilt without its last decision or its
/// ledger, so every floor is 0.
struct MasterFloor {
    version: Version,
    decided: Option<Version>,
    next_version: Version,
}

fn master_floor(s: &MasterSlaveState) -> MasterFloor {
    let none = MasterFloor {
        version: 0,
        decided: None,
        next_version: 0,
    };
    let NodeState::Master(m) = &*s.actor_states[0] else {
        return none;
    };
    if master_faults_left(s) {
        return none;
    }
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

/// The lowest "next request" the master can ever expect again from `client` (0 while a
/// storage fault may still take the master's ledger).
fn request_floor(s: &MasterSlaveState, client: Id) -> u64 {
    if master_faults_left(s) {
        return 0;
    }
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
/// It also forgets dead messages (see `is_dead`) and the duplicating network's record of
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
/// messages (see `is_dead`; dead stays dead, so they would only be cloned, hashed and
/// delivered as no-ops from here on) and the duplicating network's record of the last
/// delivered message. For `replicore_explore::Options::normalize`.
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
/// search of a lossy duplicating network explores (`replicore_explore::Jump`). It decides
/// everything the whole lossy space decides, in a space little larger than the loss-free one:
///
/// - Safety and reachability: the states it adds are lossy-reachable, and the loss-free
///   states it keeps decide every `Always`/`Sometimes` property exactly
///   ([`super::MasterSlaveConfig::safety_equivalent`]).
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
) -> Vec<stateright::actor::ActorModelAction<Msg<ModelKv>, crate::master_slave::Timer, ()>> {
    s.network
        .iter_all()
        .map(|env| stateright::actor::ActorModelAction::Drop(env.to_cloned_msg()))
        .collect()
}

/// The canonical fingerprint of `s` for the explorer (`replicore_explore`): the hash of a canonical form of
/// `s` under renaming of slaves, with dead messages forgotten (see `is_dead`), computed
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
/// discovery but never invent one: the explorer (`replicore_explore`) judges `Sometimes` properties on
/// states it generated, each the end of a real path. So "reached" is final, and "not
/// reached" must be confirmed by a search with [`canonical_fingerprint`] (see
/// [`BLIND_TO`]).
pub fn recovery_blind_fingerprint(s: &MasterSlaveState) -> u64 {
    fingerprint(s, false, true)
}

/// [`recovery_blind_fingerprint`] of a state [`forget_dead`] normalized, which has no dead
/// message left to leave out: the same value, without looking for them again (for
/// `replicore_explore::Options::normalize` with [`forget_dead`]).
pub fn recovery_blind_fingerprint_of_normalized(s: &MasterSlaveState) -> u64 {
    fingerprint(s, false, false)
}

/// The properties a search with [`recovery_blind_fingerprint`] may miss: "not reached" for
/// them is confirmed with [`canonical_fingerprint`].
pub const BLIND_TO: &[&str] = &[props::REACH_RECOVERY];

fn fingerprint(s: &MasterSlaveState, with_recovered: bool, look_for_dead: bool) -> u64 {
    use crate::fingerprint::{hash_of, hasher};
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
        // What the ghost knows of this server's storage faults.
        let id = Id::from(i);
        let faults = (
            s.history.faulted.contains(&id),
            s.history
                .voided
                .iter()
                .filter(|(v, _)| *v == id)
                .map(|(_, version)| *version)
                .collect::<Vec<_>>(),
        );
        hash_of(&(
            node,
            faults,
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
        NodeState::Master(m) => (
            &m.user,
            &m.pending,
            &m.last_decision,
            &m.queue,
            m.recovery.as_ref().map(|r| (r.version, &r.data, r.seen)),
        )
            .hash(&mut h),
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
    // the explorer (`replicore_explore`) judges `Sometimes` properties on every generated state, so merging
    // states that differ only in these bits loses no verdict (and halves the default space).
    let g = &s.history;
    (
        &g.committed,
        &g.proposed,
        &g.two_phase_commits,
        &g.aborted,
        g.version_reused,
        g.commit_without_votes,
        &g.acked,
        g.group_committed,
        g.storage_faults,
        g.storage_faults_max,
        g.master_faults,
        g.went_back,
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
            let reported = m.recovery.as_ref().map(|r| ids(&r.reported));
            (ids(&m.votes), ids(&m.acked), reported).hash(&mut h);
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
    action: &stateright::actor::ActorModelAction<Msg<ModelKv>, crate::master_slave::Timer, ()>,
) -> bool {
    use stateright::actor::ActorModelAction as A;
    matches!(action, A::Deliver { .. } | A::Timeout(..) | A::Recover(_))
}

/// The audit of the reductions above: on each state a search generates, it checks the
/// assumptions they rest on, instead of trusting the argument written beside each one.
///
/// - **Dead messages** (`is_dead`, dropped by [`forget_dead`] and left out of the
///   fingerprints): delivering a dead message changes no actor, storage, timer, crash flag or
///   ghost, and sends nothing live; and every step of the model keeps it dead. Checked on
///   every generated state, this is the induction the reduction needs: a dead message is a
///   no-op in every state reachable from where it was dropped.
/// - **Symmetry over slaves** ([`canonical_fingerprint`] merges renamings): the state with
///   two slaves swapped has the same fingerprint, the same verdict for every property, and
///   the same successors (as fingerprints).
/// - **Blind bits** ([`recovery_blind_fingerprint`] and the ghost's `rolled_back`,
///   `delta_applied`, `snapshot_applied`): flipping them changes no successor and no
///   verdict of a property that does not read them.
/// - **Merges**: two states the fingerprint merges have the same exact canonical form (the
///   least plain hash over every order of the slaves, dead messages and blind bits
///   forgotten). A merge of states that are not renamings is reported.
///
/// It costs a few successor computations per state: for the suite's small configs and
/// `replicore-check --audit`.
pub struct Audit<'a> {
    model: &'a MasterSlaveModel,
    merges: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    failure: std::sync::Mutex<Option<String>>,
    audited: std::sync::atomic::AtomicUsize,
}

impl<'a> Audit<'a> {
    /// An audit of searches of `model`.
    pub fn new(model: &'a MasterSlaveModel) -> Self {
        Audit {
            model,
            merges: Default::default(),
            failure: Default::default(),
            audited: Default::default(),
        }
    }

    /// Audits one generated state (before [`forget_dead`]); the first failure is kept.
    pub fn state(&self, s: &MasterSlaveState) {
        use std::sync::atomic::Ordering;
        self.audited.fetch_add(1, Ordering::Relaxed);
        if self.failure().is_some() {
            return;
        }
        if let Err(e) = audit(self.model, s).and_then(|()| self.merge(s)) {
            let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            failure.get_or_insert(e);
        }
    }

    /// How many states were audited.
    pub fn audited(&self) -> usize {
        self.audited.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The first assumption found broken, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn merge(&self, s: &MasterSlaveState) -> Result<(), String> {
        let fp = recovery_blind_fingerprint(s);
        let exact = exact_canonical_hash(s);
        let mut merges = self.merges.lock().unwrap_or_else(|p| p.into_inner());
        match merges.insert(fp, exact) {
            Some(earlier) if earlier != exact => Err(format!(
                "the fingerprint {fp:#x} merges two states that are not renamings of each other"
            )),
            _ => Ok(()),
        }
    }
}

/// Checks the reductions' assumptions on `s` (see [`Audit`]), without the merge table.
pub fn audit(model: &MasterSlaveModel, s: &MasterSlaveState) -> Result<(), String> {
    audit_dead(model, s)?;
    audit_symmetry(model, s)?;
    audit_blind(model, s)
}

type Action = stateright::actor::ActorModelAction<Msg<ModelKv>, crate::master_slave::Timer, ()>;

fn successors(model: &MasterSlaveModel, s: &MasterSlaveState) -> Vec<(Action, MasterSlaveState)> {
    use stateright::Model;
    let mut actions = Vec::new();
    model.actions(s, &mut actions);
    actions
        .into_iter()
        .filter_map(|a| model.next_state(s, a.clone()).map(|t| (a, t)))
        .collect()
}

/// Everything but the network is equal.
fn same_but_network(a: &MasterSlaveState, b: &MasterSlaveState) -> bool {
    a.actor_states == b.actor_states
        && a.actor_storages == b.actor_storages
        && a.timers_set == b.timers_set
        && a.crashed == b.crashed
        && a.random_choices == b.random_choices
        && a.history == b.history
}

fn audit_dead(model: &MasterSlaveModel, s: &MasterSlaveState) -> Result<(), String> {
    use stateright::Model;
    let dead: Vec<Envelope<Msg<ModelKv>>> = s
        .network
        .iter_all()
        .map(|e| e.to_cloned_msg())
        .filter(|e| is_dead(s, e))
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let before: BTreeSet<_> = s.network.iter_all().map(|e| e.to_cloned_msg()).collect();
    for env in &dead {
        let deliver = stateright::actor::ActorModelAction::Deliver {
            src: env.src,
            dst: env.dst,
            msg: env.msg.clone(),
        };
        if let Some(t) = model.next_state(s, deliver) {
            if !same_but_network(s, &t) {
                return Err(format!(
                    "delivering a message judged dead changed the state: {env:?}"
                ));
            }
            if let Some(sent) = t
                .network
                .iter_all()
                .map(|e| e.to_cloned_msg())
                .find(|e| !before.contains(e) && !is_dead(&t, e))
            {
                return Err(format!(
                    "delivering a message judged dead sent a live one: {env:?} sent {sent:?}"
                ));
            }
        }
    }
    for (action, t) in successors(model, s) {
        if let Some(env) = dead.iter().find(|env| !is_dead(&t, env)) {
            return Err(format!(
                "a message judged dead came back to life after {action:?}: {env:?}"
            ));
        }
    }
    Ok(())
}

/// `s` with slaves `a` and `b` swapped.
fn swapped(s: &MasterSlaveState, a: usize, b: usize) -> MasterSlaveState {
    let mut order: Vec<usize> = (0..s.actor_states.len()).collect();
    order.swap(a, b);
    let plan = RewritePlan::<Id, _>::from_values_to_sort(&order);
    permuted(s, &plan, s.network.rewrite(&plan))
}

fn successor_fingerprints(model: &MasterSlaveModel, s: &MasterSlaveState) -> Vec<u64> {
    let mut fps: Vec<u64> = successors(model, s)
        .into_iter()
        .map(|(_, t)| recovery_blind_fingerprint(&t))
        .collect();
    fps.sort_unstable();
    fps.dedup();
    fps
}

fn verdicts(model: &MasterSlaveModel, s: &MasterSlaveState, skip: &[&str]) -> Vec<bool> {
    use stateright::Model;
    model
        .properties()
        .iter()
        .filter(|p| !skip.contains(&p.name))
        .map(|p| (p.condition)(model, s))
        .collect()
}

fn audit_symmetry(model: &MasterSlaveModel, s: &MasterSlaveState) -> Result<(), String> {
    if model.cfg.slaves < 2 {
        return Ok(());
    }
    let t = swapped(s, 1, 2);
    if canonical_fingerprint(&t) != canonical_fingerprint(s) {
        return Err("swapping two slaves changed the canonical fingerprint".into());
    }
    if verdicts(model, &t, &[]) != verdicts(model, s, &[]) {
        return Err("swapping two slaves changed a property's verdict".into());
    }
    if successor_fingerprints(model, &t) != successor_fingerprints(model, s) {
        return Err("swapping two slaves changed the successors: slaves are not symmetric".into());
    }
    Ok(())
}

/// The properties that read the bits the blind fingerprints leave out.
const READS_BLIND_BITS: &[&str] = &[
    props::REACH_RECOVERY,
    props::REACH_ROLLBACK,
    props::REACH_DELTA,
    props::REACH_SNAPSHOT,
];

fn flip_blind_bits(s: &MasterSlaveState) -> MasterSlaveState {
    let mut t = s.clone();
    for a in t.actor_states.iter_mut() {
        if let NodeState::Slave(sl) = &**a {
            let mut sl = sl.clone();
            sl.recovered = !sl.recovered;
            *a = std::sync::Arc::new(NodeState::Slave(sl));
        }
    }
    let g = &mut t.history;
    g.rolled_back = !g.rolled_back;
    g.delta_applied = !g.delta_applied;
    g.snapshot_applied = !g.snapshot_applied;
    t
}

fn audit_blind(model: &MasterSlaveModel, s: &MasterSlaveState) -> Result<(), String> {
    let t = flip_blind_bits(s);
    if verdicts(model, &t, READS_BLIND_BITS) != verdicts(model, s, READS_BLIND_BITS) {
        return Err(
            "a property outside the blind list reads a bit the fingerprint leaves out".into(),
        );
    }
    if successor_fingerprints(model, &t) != successor_fingerprints(model, s) {
        return Err("a step reads a bit the fingerprint leaves out".into());
    }
    Ok(())
}

/// The least plain hash of `s` over every order of its slaves, with dead messages and the
/// blind bits forgotten: equal exactly for renamings (up to 64-bit collisions).
fn exact_canonical_hash(s: &MasterSlaveState) -> u64 {
    let mut base = s.clone();
    forget_dead(&mut base);
    for a in base.actor_states.iter_mut() {
        if let NodeState::Slave(sl) = &**a
            && sl.recovered
        {
            let mut sl = sl.clone();
            sl.recovered = false;
            *a = std::sync::Arc::new(NodeState::Slave(sl));
        }
    }
    if base.history.rolled_back || base.history.delta_applied || base.history.snapshot_applied {
        let g = &mut base.history;
        g.rolled_back = false;
        g.delta_applied = false;
        g.snapshot_applied = false;
    }
    let slaves: Vec<usize> = (1..base.actor_states.len())
        .filter(|&i| matches!(&*base.actor_states[i], NodeState::Slave(_)))
        .collect();
    let mut best = u64::MAX;
    let mut perm = slaves.clone();
    props::permutations(&mut perm, 0, &mut |perm| {
        let mut order: Vec<usize> = (0..base.actor_states.len()).collect();
        for (k, &i) in slaves.iter().enumerate() {
            order[i] = perm[k];
        }
        let plan = RewritePlan::<Id, _>::from_values_to_sort(&order);
        let t = permuted(&base, &plan, base.network.rewrite(&plan));
        best = best.min(crate::fingerprint::hash_of(&t));
    });
    best
}
