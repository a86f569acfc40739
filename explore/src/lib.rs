//! An exhaustive explorer of our own (depth or breadth first), for any Stateright [`Model`]: one pass
//! that decides every `Always` and `Sometimes` property, reduces by a caller-supplied
//! canonical fingerprint (symmetry and dead-message reduction without building a
//! representative state), and optionally keeps the fair edges of the explored graph for the
//! liveness check of [`liveness`].
//!
//! Why not Stateright's own checkers: its DFS needs the symmetry representative as a whole
//! new state (clone, permute, rebuild the network set) only to hash it, which was 40% of the
//! check's time here; its BFS has no symmetry at all; and the liveness graph check needs a
//! second exploration of the same space. Stateright's checkers stay available (`--strategy
//! dfs`, simulation); this one is the default for exhaustive checks.
//!
//! Semantics kept from Stateright 0.31 (see `STATERIGHT-NOTES.md`): every property is
//! evaluated on every explored state, and `Sometimes` properties on every generated state,
//! repeats included (so a fingerprint may leave out ghost bits that only a `Sometimes`
//! property reads); `Always` is discovered where false and `Sometimes` where true; states outside `within_boundary` are not explored; the initial states have
//! depth 1 and a depth bound stops expansion at that depth. `Eventually` is judged at
//! *quiescent* states, where no step changes the state (none is enabled, or each leads back
//! to the state itself up to the fingerprint): discovered where it is false there. That is
//! Stateright's terminal-state rule on states rather than paths: Stateright reports a
//! terminal state only if the property was false all along the path that reached it, which
//! differs only for a property that can turn false again after holding, and which misses
//! violations behind a join of paths (its path bits are not in the fingerprint). For
//! liveness beyond terminal states, callers use the graph check.
//!
//! ```
//! use replicore_explore::{Options, explore, plain_fingerprint};
//! use stateright::{Model, Property};
//!
//! /// Two counters, each counting up to 3, one step at a time.
//! struct Counters;
//!
//! impl Model for Counters {
//!     type State = (u8, u8);
//!     type Action = bool;
//!     fn init_states(&self) -> Vec<(u8, u8)> {
//!         vec![(0, 0)]
//!     }
//!     fn actions(&self, s: &(u8, u8), actions: &mut Vec<bool>) {
//!         if s.0 < 3 {
//!             actions.push(true);
//!         }
//!         if s.1 < 3 {
//!             actions.push(false);
//!         }
//!     }
//!     fn next_state(&self, s: &(u8, u8), first: bool) -> Option<(u8, u8)> {
//!         Some(if first { (s.0 + 1, s.1) } else { (s.0, s.1 + 1) })
//!     }
//!     fn properties(&self) -> Vec<Property<Self>> {
//!         vec![
//!             Property::always("no counter passes 3", |_, s: &(u8, u8)| s.0 <= 3 && s.1 <= 3),
//!             Property::sometimes("both counters reach 3", |_, s: &(u8, u8)| *s == (3, 3)),
//!         ]
//!     }
//! }
//!
//! let exploration = explore(&Counters, Options::new(&plain_fingerprint));
//! assert_eq!(exploration.unique, 16);
//! assert!(exploration.discoveries[0].is_none(), "the Always property holds");
//! assert!(exploration.discoveries[1].is_some(), "the Sometimes property is reached");
//! assert_eq!(exploration.cut, None, "the space was exhausted");
//! ```

pub mod liveness;

use stateright::{Expectation, Model, Path};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};

/// A canonical fingerprint: states with equal fingerprints are treated as one.
pub type Fingerprint<'a, S> = &'a (dyn Fn(&S) -> u64 + Sync);

/// Which of a model's actions a search takes (see [`Jump::fair_only_after`]).
pub type ActionFilter<'a, A> = &'a (dyn Fn(&A) -> bool + Sync);

/// A rewrite of a generated state (see [`Options::normalize`]).
pub type Normalize<'a, S> = &'a (dyn Fn(&mut S) + Sync);

/// A plain fingerprint of the whole state (no reduction), with a hasher of fixed keys: the
/// same state hashes the same in every run.
pub fn plain_fingerprint<S: Hash>(state: &S) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    state.hash(&mut h);
    h.finish()
}

/// The fair-edge graph to keep for a liveness check: which actions count, and the goal.
pub struct Liveness<'a, M: Model> {
    /// Whether an action is fair (a step the system takes once faults stop).
    pub fair: &'a (dyn Fn(&M::Action) -> bool + Sync),
    /// The states to reach.
    pub goal: &'a (dyn Fn(&M::State) -> bool + Sync),
    /// Whether a state with a fair step out of `within_boundary` counts as reaching the
    /// goal. Yes where the boundary only keeps the space finite (a bound on messages in
    /// flight: what lies past it is unexplored, not stuck), so a trap reported is a real one;
    /// no where the boundary stands for "never gets anywhere" (a bound on re-executions
    /// that cuts a livelock), so a state whose every way on leaves the boundary is a trap.
    pub bound_reaches_goal: bool,
}

/// A step of the explorer's own beside the model's actions: a shortcut for a sequence of the
/// model's actions, explored as one unfair step (never a fair edge of the liveness graph).
/// Paths through it are reported as the sequence, so they replay on the model itself.
///
/// Master/slave uses it on a lossy duplicating network: it explores the loss-free model,
/// with "every message in flight is lost" as a jump from every state (see
/// `master_slave::model::lose_all`), and reports paths on the lossy model
/// ([`Options::path_model`]).
pub struct Jump<'a, M: Model> {
    /// The state after the sequence, or `None` where the sequence is empty.
    pub apply: &'a (dyn Fn(&M::State) -> Option<M::State> + Sync),
    /// The model's actions the jump stands for, in order: applied one after another with
    /// the model's `next_state`, they give the state `apply` gives.
    pub actions: &'a (dyn Fn(&M::State) -> Vec<M::Action> + Sync),
    /// `Some(fair)`: the states the jump reaches are there for liveness only: from them only
    /// the steps `fair` accepts are taken (and no jump), unless the search also reaches them
    /// without a jump, when they are expanded in full. Every state explored is still judged;
    /// such a state with a step `fair` refuses (or a jump) enabled is not quiescent.
    pub fair_only_after: Option<ActionFilter<'a, M::Action>>,
}

/// The action index recorded for a [`Jump`] in the parent table.
const JUMP: u32 = u32::MAX;

/// Live figures of a running exploration.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// States generated, with repeats.
    pub states: usize,
    /// Unique states (after reduction).
    pub unique: usize,
    /// Deepest level reached (the initial states have depth 1).
    pub depth: usize,
    /// Time since the start.
    pub elapsed: Duration,
}

/// The order states are expanded in.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Order {
    /// Breadth first: shortest paths to discoveries; the frontier's states stay in memory
    /// (most of the memory on large spaces).
    BreadthFirst,
    /// Depth first: only the states on the stack stay in memory (a few thousand); paths to
    /// discoveries are not the shortest.
    DepthFirst,
}

/// Bounds and hooks of an exploration.
pub struct Options<'a, M: Model> {
    /// The expansion order.
    pub order: Order,
    /// The canonical fingerprint.
    pub fingerprint: Fingerprint<'a, M::State>,
    /// Rewrites every generated state before it is fingerprinted, judged and expanded: it
    /// may only drop what the fingerprint ignores and no step or property reads (dead
    /// messages), so that later steps stop cloning, hashing and delivering it. Paths are
    /// reported in the model's own states (nothing dropped).
    pub normalize: Option<Normalize<'a, M::State>>,
    /// Keep the fair-edge graph and search it for traps.
    pub liveness: Option<Liveness<'a, M>>,
    /// A step of the explorer's own, tried from every explored state after the model's.
    pub jump: Option<Jump<'a, M>>,
    /// The model reported paths are built on, when not the explored one: one with the same
    /// initial states whose steps include every step the search takes, [`Jump::actions`]
    /// included (for master/slave: the lossy model, whose loss-free twin is explored).
    pub path_model: Option<&'a M>,
    /// Stop after this many unique states.
    pub max_states: usize,
    /// Do not expand states at this depth (the depth in the search tree: the shortest
    /// distance breadth first, the path's length depth first).
    pub max_depth: Option<usize>,
    /// Stop at this instant.
    pub deadline: Option<Instant>,
    /// Called about once a second.
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
    /// Workers (depth first only): states are handed between them, so a path found may
    /// differ from run to run, but the unique count does not (the fingerprint is canonical).
    pub threads: usize,
    /// Stop as soon as one of these properties is discovered (like Stateright's
    /// `finish_when(HasDiscoveries::AnyOf(..))`); the run is then not a proof of the others.
    pub stop_at: Vec<&'static str>,
}

impl<'a, M: Model> Options<'a, M> {
    /// No liveness, no bounds.
    pub fn new(fingerprint: Fingerprint<'a, M::State>) -> Self {
        Options {
            order: Order::DepthFirst,
            fingerprint,
            normalize: None,
            liveness: None,
            jump: None,
            path_model: None,
            max_states: usize::MAX,
            max_depth: None,
            deadline: None,
            progress: None,
            stop_at: Vec::new(),
            threads: 1,
        }
    }
}

/// Why an exploration ended before the space was exhausted.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Cut {
    /// The deadline passed.
    Deadline,
    /// States at the depth bound were not expanded.
    Depth,
    /// The unique-state bound was reached.
    MaxStates,
}

/// What the liveness graph showed.
#[derive(Debug)]
pub struct GraphOutcome<M: Model> {
    /// Fair edges kept.
    pub fair_edges: usize,
    /// Goal states.
    pub goal_states: usize,
    /// States counted as reaching the goal because a fair step leaves the boundary (see
    /// [`Liveness::bound_reaches_goal`]).
    pub at_bound: usize,
    /// A shortest path to a state from which no goal state is reachable by fair steps
    /// (only when the space was exhausted).
    pub trap: Option<Path<M::State, M::Action>>,
}

/// The result of [`explore`].
#[derive(Debug)]
pub struct Exploration<M: Model> {
    /// States generated, with repeats (the initial states included).
    pub states: usize,
    /// Unique states.
    pub unique: usize,
    /// The deepest level reached (the initial states have depth 1).
    pub max_depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// For each of the model's properties, in order: a shortest path to its discovery
    /// (`Always` false, `Sometimes` true); `None` if not discovered (and always `None` for
    /// `Eventually`).
    pub discoveries: Vec<Option<Path<M::State, M::Action>>>,
    /// Set when the space was not exhausted.
    pub cut: Option<Cut>,
    /// The liveness graph, when asked for.
    pub graph: Option<GraphOutcome<M>>,
}

/// Fingerprints are hashes already: the table uses them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A property is discovered at a state (`At`) or at the successor by an action of an
/// explored state (`After`): `Sometimes` properties are judged on every generated state,
/// repeats included, so a fingerprint may ignore ghost bits that only they read. Both name
/// the state by its path (see [`Job`]).
#[derive(Clone, Copy)]
enum Found {
    At(u32),
    After(u32, u32),
}

/// A state to expand: its id, its path, its depth, the state, and whether only its fair steps
/// are taken (see [`Jump::fair_only_after`]).
///
/// The path is the entry of the parent table whose replay rebuilds this very state, the one
/// its steps are recorded from: the id itself, but for a state expanded again in full
/// ([`Visit::Widened`]), which is the member of the fingerprint class reached the second time
/// and not the one first stored (slaves renamed, blind bits or dead messages different: its
/// steps are listed in another order, and a `Sometimes` property may read what differs). Its
/// path is an entry of its own, [`WIDENED`] set.
type Job<S> = (u32, u32, u32, S, bool);

/// In the fingerprint table, the mark of a state expanded with its fair steps only.
const FAIR_ONLY: u32 = 1 << 31;

/// In a path, the mark of an entry of [`Table::widened`] (see [`Job`]).
const WIDENED: u32 = 1 << 31;

/// What [`explore`]'s table lookup found.
#[derive(Clone, Copy, Eq, PartialEq)]
enum Visit {
    /// A new state.
    New,
    /// A state seen before.
    Seen,
    /// A state seen before and expanded with its fair steps only, now reached by a search
    /// that takes every step: it is expanded again, in full.
    Widened,
}

/// What the workers of [`explore`] share.
struct Shared<S> {
    /// Fingerprint to id, in shards by the fingerprint's top bits.
    shards: Vec<Mutex<HashMap<u64, u32, BuildHasherDefault<Identity>>>>,
    /// Ids are handed out here.
    table: Mutex<Table>,
    found: Mutex<Vec<Option<Found>>>,
    found_flags: Vec<AtomicBool>,
    open: AtomicUsize,
    /// States handed from a busy worker to an idle one.
    pool: Mutex<Vec<Job<S>>>,
    pool_len: AtomicUsize,
    /// Workers waiting for work.
    idle: AtomicUsize,
    stop: AtomicBool,
    cut: Mutex<Option<Cut>>,
    states: AtomicUsize,
    max_depth: AtomicUsize,
}

/// Per id: (parent's path, index of the action in that state's action list), and whether it
/// is a goal state (when the liveness graph is kept).
#[derive(Default)]
struct Table {
    parents: Vec<(u32, u32)>,
    is_goal: Vec<bool>,
    /// The same for the paths of states expanded again in full (see [`Job`]).
    widened: Vec<(u32, u32)>,
}

/// What one worker of [`explore`] kept for itself.
struct WorkerOut {
    edges: Vec<(u32, u32)>,
    at_bound: Vec<u32>,
}

const SHARDS: usize = 64;

/// Explores `model` in `options.order` with `options.threads` workers (depth first only;
/// breadth first runs one). See the module documentation.
pub fn explore<M>(model: &M, options: Options<'_, M>) -> Exploration<M>
where
    M: Model + Sync,
    M::State: Clone + PartialEq + Send,
    M::Action: Clone + PartialEq,
{
    let started = Instant::now();
    let properties = model.properties();
    let has_eventually = properties
        .iter()
        .any(|p| p.expectation == Expectation::Eventually);
    let threads = match options.order {
        Order::DepthFirst => options.threads.max(1),
        Order::BreadthFirst => 1,
    };
    let shared = Shared {
        shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        table: Mutex::default(),
        found: Mutex::new(vec![None; properties.len()]),
        found_flags: properties.iter().map(|_| AtomicBool::new(false)).collect(),
        open: AtomicUsize::new(properties.len()),
        pool: Mutex::default(),
        pool_len: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        cut: Mutex::new(None),
        states: AtomicUsize::new(0),
        max_depth: AtomicUsize::new(0),
    };
    let judge = |state: &M::State, at: Found, kinds: &[Expectation]| {
        for (i, p) in properties.iter().enumerate() {
            if shared.found_flags[i].load(Relaxed) || !kinds.contains(&p.expectation) {
                continue;
            }
            let holds = (p.condition)(model, state);
            let hit = match p.expectation {
                Expectation::Always | Expectation::Eventually => !holds,
                Expectation::Sometimes => holds,
            };
            if hit {
                let mut found = lock(&shared.found);
                if found[i].is_none() {
                    found[i] = Some(at);
                    shared.found_flags[i].store(true, Relaxed);
                    shared.open.fetch_sub(1, Relaxed);
                }
            }
        }
    };
    let both = [Expectation::Always, Expectation::Sometimes];
    let always = [Expectation::Always];
    let sometimes = [Expectation::Sometimes];
    let eventually = [Expectation::Eventually];
    // Looks `next` up, giving it an id if it is new (`None`: new but over `max_states`), and
    // marking whether it is expanded with fair steps only.
    let max_states = options.max_states.min(FAIR_ONLY as usize);
    let id_of = |fingerprint: u64,
                 parent: (u32, u32),
                 next: &M::State,
                 fair_only: bool|
     -> Option<(u32, Visit)> {
        let mut shard = lock(&shared.shards[(fingerprint >> 58) as usize % SHARDS]);
        if let Some(entry) = shard.get_mut(&fingerprint) {
            if *entry & FAIR_ONLY != 0 && !fair_only {
                *entry &= !FAIR_ONLY;
                return Some((*entry, Visit::Widened));
            }
            return Some((*entry & !FAIR_ONLY, Visit::Seen));
        }
        let mut table = lock(&shared.table);
        if table.parents.len() >= max_states {
            return None;
        }
        let id = table.parents.len() as u32;
        table.parents.push(parent);
        if let Some(l) = &options.liveness {
            table.is_goal.push((l.goal)(next));
        }
        drop(table);
        shard.insert(fingerprint, if fair_only { id | FAIR_ONLY } else { id });
        Some((id, Visit::New))
    };

    let inits = model.init_states();
    let mut first = VecDeque::new();
    for (i, s) in inits.iter().enumerate() {
        let mut s = s.clone();
        if let Some(normalize) = options.normalize {
            normalize(&mut s);
        }
        shared.states.fetch_add(1, Relaxed);
        if !model.within_boundary(&s) {
            continue;
        }
        if let Some((id, Visit::New)) =
            id_of((options.fingerprint)(&s), (u32::MAX, i as u32), &s, false)
        {
            judge(&s, Found::At(id), &both);
            first.push_back((id, id, 1, s, false));
            shared.max_depth.store(1, Relaxed);
        }
    }

    let stop_at: Vec<usize> = properties
        .iter()
        .enumerate()
        .filter(|(_, p)| options.stop_at.contains(&p.name))
        .map(|(i, _)| i)
        .collect();
    let set_cut = |c: Cut| {
        lock(&shared.cut).get_or_insert(c);
    };
    let worker = |index: usize, mut queue: VecDeque<Job<M::State>>| -> WorkerOut {
        let mut out = WorkerOut {
            edges: Vec::new(),
            at_bound: Vec::new(),
        };
        let mut actions = Vec::new();
        let mut states = 0usize;
        let mut max_depth = 0usize;
        let mut last_progress = Instant::now();
        loop {
            if shared.stop.load(Relaxed) {
                break;
            }
            let job = match options.order {
                Order::BreadthFirst => queue.pop_front(),
                Order::DepthFirst => queue.pop_back(),
            };
            let Some((id, path, depth, state, fair_only)) = job else {
                if threads > 1 && wait_for_work(&shared, threads, &mut queue) {
                    continue;
                }
                break;
            };
            if shared.open.load(Relaxed) == 0 && options.liveness.is_none()
                || stop_at.iter().any(|i| shared.found_flags[*i].load(Relaxed))
            {
                shared.stop.store(true, Relaxed);
                break;
            }
            if options.max_depth.is_some_and(|d| depth as usize >= d) {
                set_cut(Cut::Depth);
                continue;
            }
            if states >= 0x400 {
                let total = shared.states.fetch_add(states, Relaxed) + states;
                states = 0;
                let now = Instant::now();
                if options.deadline.is_some_and(|d| now >= d) {
                    *lock(&shared.cut) = Some(Cut::Deadline);
                    shared.stop.store(true, Relaxed);
                    break;
                }
                if index == 0
                    && let Some(report) = options.progress
                    && now.duration_since(last_progress) >= Duration::from_secs(1)
                {
                    last_progress = now;
                    report(&Progress {
                        states: total,
                        unique: lock(&shared.table).parents.len(),
                        depth: shared.max_depth.load(Relaxed).max(max_depth),
                        elapsed: started.elapsed(),
                    });
                }
            }
            actions.clear();
            model.actions(&state, &mut actions);
            // Whether some step changes the state (for `Eventually`: see the module doc).
            let changed = std::cell::Cell::new(false);
            // Only fair steps from a state a jump reached (see `Jump::fair_only_after`).
            let restrict = options
                .jump
                .as_ref()
                .and_then(|j| j.fair_only_after)
                .filter(|_| fair_only);
            let jumped = match &options.jump {
                Some(j) if !fair_only => (j.apply)(&state).map(|next| (next, j.fair_only_after)),
                Some(j) if has_eventually && (j.apply)(&state).is_some() => {
                    changed.set(true);
                    None
                }
                _ => None,
            };
            let successors = actions
                .drain(..)
                .enumerate()
                .filter_map(|(ai, action)| {
                    if restrict.is_some_and(|keep| !keep(&action)) {
                        changed.set(true);
                        return None;
                    }
                    let fair = options.liveness.as_ref().is_some_and(|l| (l.fair)(&action));
                    let next = model.next_state(&state, action)?;
                    Some((ai as u32, fair, next, fair_only))
                })
                .chain(jumped.map(|(next, then)| (JUMP, false, next, then.is_some())));
            for (ai, fair, mut next, next_fair_only) in successors {
                if let Some(normalize) = options.normalize {
                    normalize(&mut next);
                }
                if !model.within_boundary(&next) {
                    changed.set(true);
                    if fair
                        && options
                            .liveness
                            .as_ref()
                            .is_some_and(|l| l.bound_reaches_goal)
                    {
                        out.at_bound.push(id);
                    }
                    continue;
                }
                states += 1;
                judge(&next, Found::After(path, ai), &sometimes);
                let Some((next_id, visit)) = id_of(
                    (options.fingerprint)(&next),
                    (path, ai),
                    &next,
                    next_fair_only,
                ) else {
                    *lock(&shared.cut) = Some(Cut::MaxStates);
                    continue;
                };
                if visit == Visit::New {
                    judge(&next, Found::At(next_id), &always);
                }
                if visit != Visit::Seen {
                    let next_path = if visit == Visit::Widened {
                        let mut table = lock(&shared.table);
                        table.widened.push((path, ai));
                        WIDENED | (table.widened.len() - 1) as u32
                    } else {
                        next_id
                    };
                    max_depth = max_depth.max(depth as usize + 1);
                    queue.push_back((next_id, next_path, depth + 1, next, next_fair_only));
                }
                if next_id != id {
                    changed.set(true);
                    if fair {
                        // Reversed: from the successor back to its predecessor.
                        out.edges.push((next_id, id));
                    }
                }
            }
            if has_eventually && !changed.get() {
                judge(&state, Found::At(path), &eventually);
            }
            // Hand the shallowest half of the stack to an idle worker.
            if threads > 1
                && queue.len() > 1
                && shared.idle.load(Relaxed) > 0
                && shared.pool_len.load(Relaxed) == 0
            {
                let mut pool = lock(&shared.pool);
                pool.extend(queue.drain(..queue.len() / 2));
                shared.pool_len.store(pool.len(), Relaxed);
            }
        }
        shared.states.fetch_add(states, Relaxed);
        shared.max_depth.fetch_max(max_depth, Relaxed);
        out
    };
    let outs: Vec<WorkerOut> = if threads == 1 {
        vec![worker(0, first)]
    } else {
        *lock(&shared.pool) = first.into();
        shared.pool_len.store(lock(&shared.pool).len(), Relaxed);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let worker = &worker;
                    scope.spawn(move || worker(i, VecDeque::new()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an explorer worker panicked"))
                .collect()
        })
    };

    let Table {
        parents,
        mut is_goal,
        widened,
    } = shared.table.into_inner().unwrap_or_else(|e| e.into_inner());
    let found = shared.found.into_inner().unwrap_or_else(|e| e.into_inner());
    let cut = shared.cut.into_inner().unwrap_or_else(|e| e.into_inner());
    let path_to = |target: u32, extra: Option<u32>| -> Path<M::State, M::Action> {
        let mut indices: Vec<u32> = extra.into_iter().collect();
        let mut cur = target;
        loop {
            let (parent, ai) = if cur & WIDENED != 0 {
                widened[(cur & !WIDENED) as usize]
            } else {
                parents[cur as usize]
            };
            indices.push(ai);
            if parent == u32::MAX {
                break;
            }
            cur = parent;
        }
        indices.reverse();
        let init = inits[indices[0] as usize].clone();
        let mut state = init.clone();
        if let Some(normalize) = options.normalize {
            normalize(&mut state);
        }
        let mut taken = Vec::new();
        let mut acts = Vec::new();
        for ai in &indices[1..] {
            acts.clear();
            if *ai == JUMP {
                // A jump stands for a sequence of the model's actions.
                let jump = options
                    .jump
                    .as_ref()
                    .expect("a jump is recorded only with one");
                acts.extend((jump.actions)(&state));
            } else {
                model.actions(&state, &mut acts);
                let action = acts.swap_remove(*ai as usize);
                acts.clear();
                acts.push(action);
            }
            for action in acts.drain(..) {
                // Replaying the recorded action indices is deterministic: the model's action
                // list depends on the state alone.
                state = model
                    .next_state(&state, action.clone())
                    .expect("a recorded step replays");
                taken.push(action);
            }
            if let Some(normalize) = options.normalize {
                normalize(&mut state);
            }
        }
        Path::from_actions(options.path_model.unwrap_or(model), init, taken.iter())
            .expect("a recorded path replays")
    };

    let graph = options.liveness.as_ref().map(|_| {
        let edges: Vec<(u32, u32)> = outs.iter().flat_map(|o| o.edges.iter().copied()).collect();
        let mut at_bound: Vec<u32> = outs
            .iter()
            .flat_map(|o| o.at_bound.iter().copied())
            .collect();
        let goal_states = is_goal.iter().filter(|g| **g).count();
        at_bound.sort_unstable();
        at_bound.dedup();
        for id in &at_bound {
            is_goal[*id as usize] = true;
        }
        let trap = if cut.is_none() {
            first_trap(parents.len(), &edges, &is_goal)
        } else {
            None
        };
        GraphOutcome {
            fair_edges: edges.len(),
            goal_states,
            at_bound: at_bound.len(),
            trap: trap.map(|t| path_to(t, None)),
        }
    });

    Exploration {
        states: shared.states.load(Relaxed),
        unique: parents.len(),
        max_depth: shared.max_depth.load(Relaxed),
        elapsed: started.elapsed(),
        discoveries: found
            .iter()
            .map(|f| {
                f.map(|f| match f {
                    Found::At(id) => path_to(id, None),
                    Found::After(id, ai) => path_to(id, Some(ai)),
                })
            })
            .collect(),
        cut,
        graph,
    }
}

/// Waits until the pool has work (moved into `queue`: true) or every worker waits with the
/// pool empty, or the search stopped (false).
fn wait_for_work<S>(shared: &Shared<S>, threads: usize, queue: &mut VecDeque<Job<S>>) -> bool {
    shared.idle.fetch_add(1, SeqCst);
    loop {
        if shared.stop.load(Relaxed) {
            return false;
        }
        if shared.pool_len.load(SeqCst) > 0 {
            let mut pool = lock(&shared.pool);
            if !pool.is_empty() {
                // Take half, leaving the rest for another idle worker.
                let keep = pool.len() / 2;
                queue.extend(pool.drain(keep..));
                shared.pool_len.store(pool.len(), SeqCst);
                shared.idle.fetch_sub(1, SeqCst);
                return true;
            }
        }
        // Nobody works and nothing is pooled: a worker that pools work is not idle, and one
        // only turns idle with an empty stack.
        if shared.idle.load(SeqCst) == threads && shared.pool_len.load(SeqCst) == 0 {
            shared.stop.store(true, Relaxed);
            return false;
        }
        std::thread::yield_now();
    }
}

/// Locks `m`, through a poisoned lock too (a worker's panic is re-raised at the join).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first state (in discovery order; breadth first, a shallowest one) that reaches no goal over the reversed
/// fair `edges` (successor, predecessor).
fn first_trap(n: usize, edges: &[(u32, u32)], is_goal: &[bool]) -> Option<u32> {
    // Compressed sparse rows of predecessors.
    let mut offsets = vec![0u32; n + 1];
    for (to, _) in edges {
        offsets[*to as usize + 1] += 1;
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let mut preds = vec![0u32; edges.len()];
    let mut fill = offsets.clone();
    for (to, from) in edges {
        preds[fill[*to as usize] as usize] = *from;
        fill[*to as usize] += 1;
    }
    let mut can_reach = is_goal.to_vec();
    let mut work: Vec<u32> = (0..n as u32).filter(|i| is_goal[*i as usize]).collect();
    while let Some(v) = work.pop() {
        for p in &preds[offsets[v as usize] as usize..offsets[v as usize + 1] as usize] {
            if !can_reach[*p as usize] {
                can_reach[*p as usize] = true;
                work.push(*p);
            }
        }
    }
    can_reach.iter().position(|r| !r).map(|t| t as u32)
}
