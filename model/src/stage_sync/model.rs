//! The checked system of protocol 4: 2–3 peers with scripted user edits over an unordered
//! duplicating network (optionally lossy) with crashes; the ghost history the properties
//! read; the properties.
//!
//! Actor ids: peer `i` is actor `i`, with priority `i` (peer 0 is the lowest).

use super::document::{Document, Edit};
use super::msg::{OpId, StageMsg};
use super::peer::{Peer, PeerState};
use super::{Mutant, Ordering};
use crate::store::Payload;
use stateright::Expectation;
use stateright::actor::{
    ActorModel, ActorModelAction, ActorModelState, Envelope, LossyNetwork, Network,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The model's document value.
pub type Value = u8;

/// A named starting point: who edits what.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Scenario {
    /// Two peers, one edit each, racing for stage 1.
    Race,
    /// Two peers: peer 0 makes two edits, peer 1 one; a message can arrive two stages early.
    Chain,
    /// Three peers, one edit each.
    Three,
    /// Two peers: peer 0 (the lowest priority) makes one edit, peer 1 two. Under fixed
    /// priorities peer 0's operation can lose both races: starvation, bounded.
    Starve,
    /// Two peers: peer 0 inserts then removes, peer 1 inserts: a removal that races an
    /// insert, so its position depends on the order agreed.
    Remove,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 5] = [
        Scenario::Race,
        Scenario::Chain,
        Scenario::Three,
        Scenario::Starve,
        Scenario::Remove,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Race => "race",
            Scenario::Chain => "chain",
            Scenario::Three => "three",
            Scenario::Starve => "starve",
            Scenario::Remove => "remove",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A model configuration of protocol 4; [`StageConfig::into_model`] builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StageConfig {
    /// The scenario it started from (for display).
    pub scenario: Scenario,
    /// Per peer, its user's edits.
    pub edits: Vec<Vec<Edit<Value>>>,
    /// The priority operations carry.
    pub ordering: Ordering,
    /// Whether peers report their journals and truncate at the stability line.
    pub stability: bool,
    /// Whether messages can be lost (peers then re-send on a timer).
    pub lossy: bool,
    /// How many peers may be down at the same time.
    pub max_crashes: usize,
    /// A deliberate bug.
    pub mutant: Option<Mutant>,
}

fn insert(at: u32, value: Value) -> Edit<Value> {
    Edit::Insert { at, value }
}

impl Default for StageConfig {
    /// The race scenario.
    fn default() -> Self {
        StageConfig::scenario(Scenario::Race)
    }
}

impl StageConfig {
    /// The config of `scenario`: aged priorities, stability on (but for [`Scenario::Three`]),
    /// loss-free duplicating network, no crashes.
    pub fn scenario(scenario: Scenario) -> StageConfig {
        let edits = match scenario {
            Scenario::Race => vec![vec![insert(0, 1)], vec![insert(0, 2)]],
            Scenario::Chain => vec![vec![insert(0, 1), insert(0, 2)], vec![insert(9, 3)]],
            Scenario::Three => vec![vec![insert(0, 1)], vec![insert(0, 2)], vec![insert(0, 3)]],
            Scenario::Starve => vec![vec![insert(0, 1)], vec![insert(0, 2), insert(0, 3)]],
            Scenario::Remove => vec![
                vec![insert(0, 1), Edit::Remove { at: 0 }],
                vec![insert(0, 2)],
            ],
        };
        StageConfig {
            scenario,
            edits,
            ordering: Ordering::Aged,
            // Three peers' reports multiply the space beyond a quick check (over 2 million
            // states, against 2,435 without): the stability line is checked on the two-peer
            // scenarios by default, on three peers as an option.
            stability: scenario != Scenario::Three,
            lossy: false,
            max_crashes: 0,
            mutant: None,
        }
    }

    /// How many peers.
    pub fn peers(&self) -> usize {
        self.edits.len()
    }

    /// How many operations the users make in all.
    pub fn ops(&self) -> usize {
        self.edits.iter().map(Vec::len).sum()
    }

    /// The config whose space decides every safety and reachability property of this one,
    /// exactly, and is smaller: the loss-free one. On an unordered duplicating network a
    /// delivered message stays deliverable and no message's presence disables an action, so
    /// every run with drops is matched by the run that never delivers those messages again,
    /// through the same peer states and ghost.
    pub fn safety_equivalent(&self) -> StageConfig {
        StageConfig {
            lossy: false,
            ..self.clone()
        }
    }

    /// Builds the actor model with every property that applies to this config.
    pub fn into_model(self) -> StageModel {
        let n = self.peers();
        let actors = (0..n).map(|i| Peer {
            peers: n,
            edits: self.edits[i].clone(),
            ordering: self.ordering,
            stability: self.stability,
            resend: self.lossy,
            save: self.max_crashes > 0,
            mutant: self.mutant,
        });
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
            .record_msg_in(Ghost::record_in);

        use props::*;
        model = model
            .property(Expectation::Always, SAME_OPS_SAME_JOURNAL, |_, s| {
                same_ops_same_journal(s)
            })
            .property(Expectation::Always, DATA_IS_REPLAY, |_, s| {
                data_is_replay(s)
            })
            .property(Expectation::Always, AT_MOST_ONCE, |_, s| at_most_once(s))
            .property(Expectation::Always, NONE_LOST, |_, s| none_lost(s))
            .property(Expectation::Always, CHAINED, |_, s| journals_chained(s))
            .property(Expectation::Always, STABLE, |_, s| stable_never_undone(s))
            .property(Expectation::Always, ATTEMPTS_BOUNDED, |_, s| {
                s.history.attempts.values().all(|a| *a < MAX_ATTEMPTS)
            })
            .within_boundary(|_, s| s.history.attempts.values().all(|a| *a <= MAX_ATTEMPTS));
        if self.scenario == Scenario::Starve {
            model = model.property(Expectation::Always, STARVATION, |_, s| no_starvation(s));
        }
        model = model
            .property(Expectation::Sometimes, REACH_UNDO_REDO, |_, s| {
                s.history.attempts.values().any(|a| *a >= 2)
            })
            .property(Expectation::Sometimes, REACH_WAITING, |_, s| {
                live(s).any(|(_, p)| !p.waiting.is_empty())
            })
            .property(Expectation::Sometimes, REACH_CONVERGED, |m, s| {
                converged(&m.cfg, s)
            });
        if n >= 3 {
            model = model.property(Expectation::Sometimes, REACH_REQUEUED, |_, s| {
                live(s).any(|(_, p)| !p.redo.is_empty())
            });
        }
        if self.stability {
            model = model.property(Expectation::Sometimes, REACH_TRUNCATED, |_, s| {
                live(s).any(|(_, p)| p.base.stage > 0)
            });
        }
        model
    }
}

impl fmt::Display for StageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stage-sync: scenario={} peers={} ops={} ordering={} stability={} network={}duplicating crashes={} mutant={}",
            self.scenario.name(),
            self.peers(),
            self.ops(),
            self.ordering.name(),
            if self.stability { "on" } else { "off" },
            if self.lossy { "lossy," } else { "" },
            self.max_crashes,
            self.mutant.map_or("none", Mutant::name),
        )
    }
}

/// The exploration stops at states where an operation was executed this many times; the
/// property [`props::ATTEMPTS_BOUNDED`] fails one step earlier, so a config that gets there is
/// reported, never silently cut. Correct configs stay far below (an operation loses a race
/// to each operation that beats it at most once); a mutant whose peers undo each other
/// forever needs the bound to end.
pub const MAX_ATTEMPTS: u32 = 6;

/// The model type built by [`StageConfig::into_model`].
pub type StageModel = ActorModel<Peer<Value>, StageConfig, Ghost>;
/// A state of [`StageModel`].
pub type StageState = ActorModelState<Peer<Value>, Ghost>;
/// An action of [`StageModel`].
pub type StageAction = ActorModelAction<StageMsg<Value>, super::msg::Timer, ()>;

/// Ghost state for the properties, reconstructed from the messages peers sent and took. It is
/// never read by protocol logic.
#[derive(Clone, Debug, Default, Eq, Hash, PartialEq)]
pub struct Ghost {
    /// (peer, operation): every operation a peer originated or took in from a message.
    pub received: BTreeSet<(usize, OpId)>,
    /// Per operation, the highest execution (attempt) its origin sent.
    pub attempts: BTreeMap<OpId, u32>,
}

impl Ghost {
    fn record_out(
        _cfg: &StageConfig,
        ghost: &Self,
        env: Envelope<&StageMsg<Value>>,
    ) -> Option<Self> {
        let StageMsg::Sync(m) = env.msg else {
            return None;
        };
        let id = m.current.id;
        let seen = ghost.received.contains(&(usize::from(env.src), id));
        let attempt = ghost.attempts.get(&id).copied().unwrap_or(0);
        if seen && attempt >= m.current.attempt {
            return None;
        }
        let mut g = ghost.clone();
        g.received.insert((usize::from(env.src), id));
        g.attempts.insert(id, attempt.max(m.current.attempt));
        Some(g)
    }

    fn record_in(
        _cfg: &StageConfig,
        ghost: &Self,
        env: Envelope<&StageMsg<Value>>,
    ) -> Option<Self> {
        let StageMsg::Sync(m) = env.msg else {
            return None;
        };
        let key = (usize::from(env.dst), m.current.id);
        if ghost.received.contains(&key) {
            return None;
        }
        let mut g = ghost.clone();
        g.received.insert(key);
        Some(g)
    }
}

/// Every live peer's state, with its index.
pub fn live(s: &StageState) -> impl Iterator<Item = (usize, &PeerState<Value>)> {
    s.actor_states
        .iter()
        .enumerate()
        .filter(|(i, _)| !s.crashed[*i])
        .map(|(i, a)| (i, &**a))
}

/// The property names and predicates of protocol 4. Each predicate is a plain function of a
/// model state, so tests and the checker call the same code.
pub mod props {
    use super::*;

    /// The seed's property.
    pub const SAME_OPS_SAME_JOURNAL: &str =
        "peers holding the same operations and nothing back have identical journals and data";
    /// Undo is exact.
    pub const DATA_IS_REPLAY: &str = "a peer's data equals replaying its journal from the start";
    /// No duplicates.
    pub const AT_MOST_ONCE: &str =
        "every operation appears at most once across journal, waiting list and redo queue";
    /// No loss.
    pub const NONE_LOST: &str = "no operation a peer originated or received is ever lost";
    /// Chained journals.
    pub const CHAINED: &str =
        "journals are chained: each entry's previous operation is the entry before it";
    /// The stability line.
    pub const STABLE: &str = "nothing at or below a peer's stability line is undone anywhere";
    /// The exploration's bound ([`MAX_ATTEMPTS`]) is never reached.
    pub const ATTEMPTS_BOUNDED: &str =
        "no operation is executed more than 5 times (the exploration's bound is not reached)";
    /// Bounded starvation (scenario starve).
    pub const STARVATION: &str =
        "no operation loses more than one race (bounded starvation, scenario starve)";
    /// Reachability.
    pub const REACH_UNDO_REDO: &str = "an operation is undone and executed again";
    /// Reachability.
    pub const REACH_WAITING: &str = "a waiting list holds a message";
    /// Reachability.
    pub const REACH_REQUEUED: &str = "a redo queue holds another peer's operation";
    /// Reachability.
    pub const REACH_TRUNCATED: &str = "a journal is truncated at the stability line";
    /// The liveness graph check (not a Stateright property): from every reachable state, fair
    /// steps (deliveries, timers, restarts) can still reach [`converged`].
    pub const CONVERGENCE_REACHABLE: &str =
        "from every reachable state, all peers can still converge (liveness graph)";
    /// Reachability, and the liveness graph check's goal.
    pub const REACH_CONVERGED: &str =
        "every edit is made and every peer holds all operations in one journal";

    /// Every operation a peer holds: truncated, journaled, waiting, queued; with repeats.
    pub fn held<V: Payload>(p: &PeerState<V>) -> Vec<OpId> {
        let mut out: Vec<OpId> = p
            .base
            .done
            .iter()
            .flat_map(|(o, n)| (1..=*n).map(|seq| OpId { origin: *o, seq }))
            .collect();
        out.extend(p.journal.iter().map(|e| e.sync.current.id));
        out.extend(p.waiting.keys().copied());
        out.extend(p.redo.keys().copied());
        out
    }

    /// Live peers that hold the same operations and hold nothing back have the same stage, the
    /// same journal (chain value at that stage) and the same document.
    pub fn same_ops_same_journal(s: &StageState) -> bool {
        same_ops_same_journal_of(&live(s).map(|(_, p)| p).collect::<Vec<_>>())
    }

    /// [`same_ops_same_journal`] of these peers (of any value type: the runtime's too).
    pub fn same_ops_same_journal_of<V: Payload>(peers: &[&PeerState<V>]) -> bool {
        let ps: Vec<(BTreeSet<OpId>, &PeerState<V>)> = peers
            .iter()
            .filter(|p| p.settled())
            .map(|p| (held(p).into_iter().collect(), *p))
            .collect();
        ps.iter().all(|(a_ops, a)| {
            ps.iter().all(|(b_ops, b)| {
                a_ops != b_ops
                    || (a.stage() == b.stage()
                        && a.chain_at(a.stage()) == b.chain_at(b.stage())
                        && a.doc == b.doc)
            })
        })
    }

    /// Every live peer's document is its base document with its journal's edits executed in
    /// stage order.
    pub fn data_is_replay(s: &StageState) -> bool {
        live(s).all(|(_, p)| data_is_replay_of(p))
    }

    /// [`data_is_replay`] of one peer.
    pub fn data_is_replay_of<V: Payload>(p: &PeerState<V>) -> bool {
        let mut d: Document<V> = p.base.doc.clone();
        for e in &p.journal {
            d.apply(&e.sync.current.edit);
        }
        d == p.doc
    }

    /// No live peer holds an operation twice.
    pub fn at_most_once(s: &StageState) -> bool {
        live(s).all(|(_, p)| at_most_once_of(p))
    }

    /// [`at_most_once`] of one peer.
    pub fn at_most_once_of<V: Payload>(p: &PeerState<V>) -> bool {
        let all = held(p);
        let set: BTreeSet<&OpId> = all.iter().collect();
        set.len() == all.len()
    }

    /// Every live peer holds every operation it originated or took in.
    pub fn none_lost(s: &StageState) -> bool {
        let holds: Vec<Option<BTreeSet<OpId>>> = s
            .actor_states
            .iter()
            .enumerate()
            .map(|(i, p)| (!s.crashed[i]).then(|| held(p).into_iter().collect()))
            .collect();
        s.history
            .received
            .iter()
            .all(|(i, id)| holds[*i].as_ref().is_none_or(|h| h.contains(id)))
    }

    /// Every journal entry of every live peer sits at its message's stage, after its
    /// message's previous operation.
    pub fn journals_chained(s: &StageState) -> bool {
        live(s).all(|(_, p)| journal_chained_of(p))
    }

    /// [`journals_chained`] of one peer.
    pub fn journal_chained_of<V: Payload>(p: &PeerState<V>) -> bool {
        p.journal.iter().enumerate().all(|(i, e)| {
            let stage = p.base.stage + 1 + i as u32;
            e.sync.current.stage == stage
                && p.op_at(stage - 1) == Some(e.sync.previous.map(|x| x.id))
        })
    }

    /// For every live peer's stability line, every live peer has reached it and holds the same
    /// journal up to it.
    pub fn stable_never_undone(s: &StageState) -> bool {
        stable_never_undone_of(&live(s).map(|(_, p)| p).collect::<Vec<_>>())
    }

    /// [`stable_never_undone`] of these peers.
    pub fn stable_never_undone_of<V: Payload>(ps: &[&PeerState<V>]) -> bool {
        ps.iter().all(|p| {
            let line = p.base.stage;
            line == 0
                || ps.iter().all(|q| {
                    q.stage() >= line
                        && (q.base.stage > line || q.chain_at(line) == Some(p.base.chain))
                })
        })
    }

    /// No operation was executed more than twice by its origin: it lost at most one race.
    pub fn no_starvation(s: &StageState) -> bool {
        s.history.attempts.values().all(|a| *a <= 2)
    }

    /// Every peer is up, made all its edits, holds nothing back, and all hold every
    /// operation in one journal, with one document.
    pub fn converged(cfg: &StageConfig, s: &StageState) -> bool {
        if s.crashed.iter().any(|c| *c) {
            return false;
        }
        let first = &s.actor_states[0];
        s.actor_states.iter().enumerate().all(|(i, p)| {
            p.next_edit as usize == cfg.edits[i].len()
                && p.settled()
                && p.stage() as usize == cfg.ops()
                && p.stage() == first.stage()
                && p.chain_at(p.stage()) == first.chain_at(first.stage())
                && p.doc == first.doc
        })
    }

    /// Every property's stable id (for `--json` and scripts), beside its prose name: an id
    /// never changes once published, the prose may.
    pub const IDS: &[(&str, &str)] = &[
        ("same-ops-same-journal", SAME_OPS_SAME_JOURNAL),
        ("data-is-replay", DATA_IS_REPLAY),
        ("at-most-once", AT_MOST_ONCE),
        ("none-lost", NONE_LOST),
        ("chained", CHAINED),
        ("stable", STABLE),
        ("attempts-bounded", ATTEMPTS_BOUNDED),
        ("starvation", STARVATION),
        ("reach-undo-redo", REACH_UNDO_REDO),
        ("reach-waiting", REACH_WAITING),
        ("reach-requeued", REACH_REQUEUED),
        ("reach-truncated", REACH_TRUNCATED),
        ("convergence-reachable", CONVERGENCE_REACHABLE),
        ("reach-converged", REACH_CONVERGED),
    ];
}

/// Whether an action is one the system takes once faults stop (for the liveness graph check):
/// deliveries, timers and restarts, not drops or crashes.
pub fn fair(action: &StageAction) -> bool {
    matches!(
        action,
        ActorModelAction::Deliver { .. }
            | ActorModelAction::Timeout(..)
            | ActorModelAction::Recover(_)
    )
}

/// The liveness graph check's goal for `cfg`: [`props::converged`].
pub fn converged_goal(cfg: &StageConfig) -> impl Fn(&StageState) -> bool + '_ {
    move |s| props::converged(cfg, s)
}

/// Whether delivering `env` is a no-op in this state and in every state reachable from it
/// (for the protocol, not for mutants that drop held operations): a synchronization message
/// whose operation its destination truncated, or holds at this execution or a newer one (a
/// peer only ever replaces an operation it holds by a newer execution, or truncates it), and
/// a report no newer than the destination's latest from that peer (reports only move forward).
pub fn is_dead(s: &StageState, env: &Envelope<StageMsg<Value>>) -> bool {
    let dst = &s.actor_states[usize::from(env.dst)];
    match &env.msg {
        StageMsg::Sync(m) => {
            let id = m.current.id;
            dst.done(id) || dst.attempt_held(id).is_some_and(|a| a >= m.current.attempt)
        }
        StageMsg::Report(r) => dst
            .reports
            .get(&(usize::from(env.src) as u64))
            .is_some_and(|k| k.seq >= r.seq),
        _ => false,
    }
}

/// A canonical fingerprint: the state without its dead messages (see [`is_dead`]) and without
/// the duplicating network's record of the last delivered message; states that differ only
/// there behave alike. There is no symmetry among peers: their scripts and priorities differ.
pub fn canonical_fingerprint(s: &StageState) -> u64 {
    use crate::fingerprint::{hash_of, hasher};
    use std::hash::{Hash, Hasher};
    let mut live: Vec<u64> = s
        .network
        .iter_deliverable()
        .map(|e| e.to_cloned_msg())
        .filter(|e| !is_dead(s, e))
        .map(|e| hash_of(&e))
        .collect();
    live.sort_unstable();
    let mut h = hasher();
    (
        &s.actor_states,
        &s.actor_storages,
        &s.crashed,
        &s.timers_set,
        &s.history,
        live,
    )
        .hash(&mut h);
    h.finish()
}
