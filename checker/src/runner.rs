//! Drives one Stateright checker run, whatever the protocol: picks the strategy, polls the
//! checker handle for a live progress line, joins it and collects the discoveries.
//!
//! Stateright's own `report()` exits 0 whatever it finds, so the verdict is made here from
//! `discoveries()` and the properties' expectations.

use serde::Serialize;
use stateright::{Checker, CheckerBuilder, Expectation, Model, Path};
use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::hash::{DefaultHasher, Hasher};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How the state space is searched. Exhaustive searches run replicore's one-pass explorer
/// ([`replicore_explore`]: depth first on `--threads` workers, canonical
/// fingerprints, `Eventually` at quiescent states and the liveness graph in the same pass).
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Breadth first: shortest counterexamples; the frontier's states stay in memory.
    Bfs,
    /// Depth first: little memory beyond one fingerprint and the graph's edges per state.
    Dfs,
    /// Random walks from a seed: for spaces too large to exhaust; never a proof.
    Simulation,
}

impl Strategy {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Bfs => "bfs",
            Strategy::Dfs => "dfs",
            Strategy::Simulation => "simulation",
        }
    }
}

/// The search settings shared by every protocol.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// The strategy.
    pub strategy: Strategy,
    /// Whether the protocol's symmetry representative is used (dfs and simulation only).
    pub symmetry: bool,
    /// Checker threads.
    pub threads: usize,
    /// The simulation seed.
    pub seed: u64,
    /// Stop expanding states at this depth (Stateright counts the initial state as depth 1).
    pub depth: Option<usize>,
    /// Stop after this long.
    #[serde(rename = "timeout_secs", serialize_with = "secs_opt")]
    pub timeout: Option<Duration>,
}

fn secs_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Why a run ended before the space was exhausted.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// `--timeout` elapsed.
    Timeout,
    /// `--depth` cut some states.
    Depth,
    /// Simulation walks random paths; it never exhausts a space.
    Simulation,
    /// The explorer's unique-state bound (`--graph-max-states`) was reached.
    MaxStates,
}

impl Stop {
    /// Says what stopped the run, for the report.
    pub fn describe(self, settings: &Settings) -> String {
        match self {
            Stop::Timeout => format!(
                "stopped by --timeout {} s before the state space was exhausted",
                settings.timeout.map_or(0, |t| t.as_secs())
            ),
            Stop::Depth => format!(
                "stopped by --depth {}: states at that depth were not expanded",
                settings.depth.unwrap_or(0)
            ),
            Stop::Simulation => {
                "simulation samples random paths and never exhausts the state space".into()
            }
            Stop::MaxStates => {
                "stopped at --graph-max-states unique states before the space was exhausted".into()
            }
        }
    }
}

/// A path and its `Path::encode` form.
pub type Discovery<M> = (Path<<M as Model>::State, <M as Model>::Action>, String);

/// A symmetry representative: maps a state to the canonical one of its class.
pub type Representative<M> = fn(&<M as Model>::State) -> <M as Model>::State;

/// One property and what the run found about it.
pub struct Finding<M: Model> {
    /// The property's name (a short sentence).
    pub name: &'static str,
    /// Always, Sometimes or Eventually.
    pub expectation: Expectation,
    /// Whether the run discovered it: a violation for Always/Eventually, a witness for
    /// Sometimes.
    pub found: bool,
    /// The path to the discovery, when Stateright could rebuild it.
    pub discovery: Option<Discovery<M>>,
}

/// What one checker run saw.
pub struct Outcome<M: Model> {
    /// States visited (with repeats).
    pub states: usize,
    /// Unique states (after symmetry reduction).
    pub unique: usize,
    /// The deepest state seen (Stateright counts the initial state as depth 1).
    pub max_depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// One entry per property of the model, in the model's order.
    pub findings: Vec<Finding<M>>,
    /// Set when the space was not exhausted and some property has no discovery.
    pub stopped: Option<Stop>,
}

/// Runs `model` to completion (or to its bounds) with `settings`.
pub fn run<M>(
    model: M,
    settings: &Settings,
    representative: Option<Representative<M>>,
) -> Outcome<M>
where
    M: Model + Send + Sync + 'static,
    M::State: Debug + Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: Debug + Clone + PartialEq,
{
    let started = Instant::now();
    if settings.strategy == Strategy::Simulation {
        return simulate(
            &model,
            settings,
            representative.filter(|_| settings.symmetry),
            started,
        );
    }
    // Our explorer judges `Eventually` at quiescent states, not by Stateright's rule on
    // paths: a model with one that comes this way goes to Stateright's own checker (a
    // protocol that wants the explorer's rule searches with `explore`, as master-slave does).
    let eventually = model
        .properties()
        .iter()
        .any(|p| p.expectation == Expectation::Eventually);
    if settings.strategy != Strategy::Simulation && !eventually {
        let rep = representative.filter(|_| settings.symmetry);
        let fingerprint = move |s: &M::State| match rep {
            Some(f) => replicore_explore::plain_fingerprint(&f(s)),
            None => replicore_explore::plain_fingerprint(s),
        };
        return explore(
            &model,
            settings,
            replicore_explore::Options::new(&fingerprint),
        )
        .0;
    }
    let mut builder: CheckerBuilder<M> = model.checker().threads(settings.threads.max(1));
    if let Some(depth) = settings.depth {
        builder = builder.target_max_depth(depth);
    }
    if let Some(timeout) = settings.timeout {
        builder = builder.timeout(timeout);
    }
    if settings.symmetry
        && let Some(f) = representative
    {
        builder = builder.symmetry_fn(f);
    }
    match settings.strategy {
        Strategy::Bfs => collect(builder.spawn_bfs(), settings, started),
        // A simulation returned above.
        Strategy::Dfs | Strategy::Simulation => collect(builder.spawn_dfs(), settings, started),
    }
}

/// What [`explore`] saw beyond the [`Outcome`]: the liveness graph, when asked for.
pub type Graph<M> = replicore_explore::GraphOutcome<M>;

/// Runs replicore's one-pass explorer ([`replicore_explore`]) with the caller's
/// `options` (fingerprint, reductions, liveness graph, state bound), in the strategy's order
/// and with the settings' workers, depth bound and timeout, and a live progress line on a
/// terminal.
pub fn explore<M>(
    model: &M,
    settings: &Settings,
    options: replicore_explore::Options<'_, M>,
) -> (Outcome<M>, Option<Graph<M>>)
where
    M: Model + Sync,
    M::State: Debug + Clone + PartialEq + Send,
    M::Action: Debug + Clone + PartialEq,
{
    use replicore_explore::{Cut, Options, Order, Progress};
    let started = Instant::now();
    let live = std::io::stderr().is_terminal();
    let printed = std::sync::atomic::AtomicBool::new(false);
    let progress = |p: &Progress| {
        let secs = p.elapsed.as_secs_f64();
        eprint!(
            "\r\x1b[2K  states {}  unique {}  depth {}  {:.0} states/s  {secs:.0} s",
            p.states,
            p.unique,
            p.depth,
            p.states as f64 / secs.max(1e-9),
        );
        let _ = std::io::stderr().flush();
        printed.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let options = Options {
        order: match settings.strategy {
            Strategy::Bfs => Order::BreadthFirst,
            Strategy::Dfs | Strategy::Simulation => Order::DepthFirst,
        },
        threads: settings.threads,
        max_depth: settings.depth,
        deadline: settings.timeout.map(|t| started + t),
        progress: if live { Some(&progress) } else { None },
        ..options
    };
    // Paths are reported on the model the options name for them, if any.
    let reported = options.path_model.unwrap_or(model);
    let run = replicore_explore::explore(model, options);
    if printed.load(std::sync::atomic::Ordering::Relaxed) {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    let findings: Vec<Finding<M>> = model
        .properties()
        .into_iter()
        .zip(run.discoveries)
        .map(|(p, d)| Finding {
            name: p.name,
            expectation: p.expectation,
            found: d.is_some(),
            discovery: d.map(|path| {
                let encoded = path.encode(reported);
                (path, encoded)
            }),
        })
        .collect();
    let stopped = match run.cut {
        Some(Cut::Deadline) => Some(Stop::Timeout),
        Some(Cut::Depth) => Some(Stop::Depth),
        Some(Cut::MaxStates) => Some(Stop::MaxStates),
        None => None,
    };
    let outcome = Outcome {
        states: run.states,
        unique: run.unique,
        max_depth: run.max_depth,
        elapsed: started.elapsed(),
        findings,
        stopped,
    };
    (outcome, run.graph)
}

fn collect<M, C>(checker: C, settings: &Settings, started: Instant) -> Outcome<M>
where
    M: Model,
    M::State: Debug + Hash + Clone + PartialEq,
    M::Action: Debug + Clone + PartialEq,
    C: Checker<M>,
{
    let checker = poll(checker, started, settings.strategy == Strategy::Simulation);
    let elapsed = started.elapsed();
    let model = checker.model();
    let findings: Vec<Finding<M>> = model
        .properties()
        .into_iter()
        .map(|p| {
            let (found, discovery) = match rebuild(&checker, p.name) {
                Rebuilt::None => (false, None),
                Rebuilt::Path(path) => {
                    let encoded = path.encode(model);
                    (true, Some((path, encoded)))
                }
                Rebuilt::Lost => (true, None),
            };
            Finding {
                name: p.name,
                expectation: p.expectation,
                found,
                discovery,
            }
        })
        .collect();
    let undecided = findings.iter().any(|f| !f.found);
    let max_depth = checker.max_depth();
    let stopped = if !undecided {
        None
    } else if settings.strategy == Strategy::Simulation {
        Some(Stop::Simulation)
    } else if settings.timeout.is_some_and(|t| elapsed >= t) {
        Some(Stop::Timeout)
    } else if settings.depth.is_some_and(|d| max_depth >= d) {
        // Stateright records the depth of a state before skipping it for being too deep, so
        // reaching the bound means at least one state went unexpanded.
        Some(Stop::Depth)
    } else {
        None
    };
    Outcome {
        states: checker.state_count(),
        unique: checker.unique_state_count(),
        max_depth,
        elapsed,
        findings,
        stopped,
    }
}

enum Rebuilt<M: Model> {
    None,
    Path(Path<M::State, M::Action>),
    /// Discovered, but the path does not replay.
    Lost,
}

/// The discovery of `name`. Stateright 0.31's simulation records an index for every action
/// it tried, including ignored ones taken out of the list with `swap_remove`, so rebuilding
/// its path can panic; that must not take the report down with it.
fn rebuild<M: Model, C: Checker<M>>(checker: &C, name: &'static str) -> Rebuilt<M>
where
    M::State: Debug + Hash + Clone + PartialEq,
    M::Action: Debug + Clone + PartialEq,
{
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checker.discovery(name)));
    std::panic::set_hook(hook);
    match result {
        Ok(Some(path)) => Rebuilt::Path(path),
        Ok(None) => Rebuilt::None,
        Err(_) => Rebuilt::Lost,
    }
}

/// A walk: its initial state and the actions it took.
type Walk<M> = (<M as Model>::State, Vec<<M as Model>::Action>);

/// SplitMix64: a tiny, well-mixed generator, so a seed replays the same walks on any machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random walks from `settings.seed`, one thread, until the timeout (or until every property
/// has a discovery). Each walk starts at a random initial state and takes a random enabled
/// action until it reaches a terminal state, revisits a state of the same walk, leaves the
/// boundary or reaches `--depth`. Always and Sometimes are judged at every state; Eventually
/// only where a walk ends at a terminal state, never at a cycle.
///
/// Stateright 0.31's own simulation records ignored actions' indices after `swap_remove`, so
/// its paths often do not rebuild (a panic), and it judges Eventually where a walk closes a
/// cycle; hence this walker, whose paths are the actions it actually took.
fn simulate<M>(
    model: &M,
    settings: &Settings,
    representative: Option<Representative<M>>,
    started: Instant,
) -> Outcome<M>
where
    M: Model,
    M::State: Debug + Hash + Clone + PartialEq,
    M::Action: Debug + Clone + PartialEq,
{
    let properties = model.properties();
    let deadline = settings.timeout.map(|t| started + t);
    let mut rng = SplitMix64(settings.seed);
    let mut found: Vec<Option<Walk<M>>> = properties.iter().map(|_| None).collect();
    let inits = model.init_states();
    let (mut states, mut max_depth) = (0usize, 0usize);
    let live = std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    let fingerprint = |s: &M::State| {
        let mut h = DefaultHasher::new();
        match representative {
            Some(f) => f(s).hash(&mut h),
            None => s.hash(&mut h),
        }
        h.finish()
    };
    'walks: while !inits.is_empty() && found.iter().any(Option::is_none) {
        let init = inits[rng.below(inits.len())].clone();
        let mut state = init.clone();
        let mut taken: Vec<M::Action> = Vec::new();
        let mut seen = HashSet::new();
        let mut pending_eventually: Vec<usize> = properties
            .iter()
            .enumerate()
            .filter(|(_, p)| p.expectation == Expectation::Eventually)
            .map(|(i, _)| i)
            .collect();
        let mut terminal = false;
        loop {
            let depth = taken.len() + 1;
            if settings.depth.is_some_and(|d| depth >= d) || !model.within_boundary(&state) {
                break;
            }
            if !seen.insert(fingerprint(&state)) {
                break;
            }
            states += 1;
            max_depth = max_depth.max(depth);
            for (i, p) in properties.iter().enumerate() {
                let hit = match p.expectation {
                    Expectation::Always => !(p.condition)(model, &state),
                    Expectation::Sometimes => (p.condition)(model, &state),
                    Expectation::Eventually => {
                        if (p.condition)(model, &state) {
                            pending_eventually.retain(|e| *e != i);
                        }
                        false
                    }
                };
                if hit && found[i].is_none() {
                    found[i] = Some((init.clone(), taken.clone()));
                }
            }
            if states % 1024 == 0 {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break 'walks;
                }
                if live && last_print.elapsed() >= Duration::from_secs(1) {
                    last_print = Instant::now();
                    let secs = started.elapsed().as_secs_f64();
                    eprint!(
                        "\r\x1b[2K  states {states}  depth {max_depth}  {:.0} states/s  {secs:.0} s",
                        states as f64 / secs.max(1e-9)
                    );
                }
            }
            let mut actions = Vec::new();
            model.actions(&state, &mut actions);
            let next = loop {
                if actions.is_empty() {
                    break None;
                }
                let action = actions.swap_remove(rng.below(actions.len()));
                if let Some(next) = model.next_state(&state, action.clone()) {
                    break Some((action, next));
                }
            };
            match next {
                Some((action, next)) => {
                    taken.push(action);
                    state = next;
                }
                None => {
                    terminal = true;
                    break;
                }
            }
        }
        if terminal {
            for i in pending_eventually {
                if found[i].is_none() {
                    found[i] = Some((init.clone(), taken.clone()));
                }
            }
        }
    }
    if live {
        eprint!("\r\x1b[2K");
    }
    let elapsed = started.elapsed();
    let findings: Vec<Finding<M>> = properties
        .iter()
        .zip(found)
        .map(|(p, f)| {
            let discovery = f.as_ref().and_then(|(init, actions)| {
                let path = Path::from_actions(model, init.clone(), actions.iter())?;
                let encoded = path.encode(model);
                Some((path, encoded))
            });
            Finding {
                name: p.name,
                expectation: p.expectation.clone(),
                found: f.is_some(),
                discovery,
            }
        })
        .collect();
    let undecided = findings.iter().any(|f| !f.found);
    Outcome {
        states,
        unique: states,
        max_depth,
        elapsed,
        findings,
        stopped: undecided.then_some(Stop::Simulation),
    }
}

/// Waits for the checker, refreshing a progress line about once a second when stderr is a
/// terminal (and printing nothing otherwise).
fn poll<M: Model, C: Checker<M>>(checker: C, started: Instant, simulation: bool) -> C {
    let live = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    let mut printed = false;
    while !checker.is_done() {
        std::thread::sleep(Duration::from_millis(50));
        if live && last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let states = checker.state_count();
            let unique = if simulation {
                String::from("-")
            } else {
                checker.unique_state_count().to_string()
            };
            eprint!(
                "\r\x1b[2K  states {states}  unique {unique}  depth {}  {:.0} states/s  {secs:.0} s",
                checker.max_depth(),
                states as f64 / secs.max(1e-9),
            );
            let _ = std::io::stderr().flush();
            printed = true;
        }
    }
    if printed {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    checker.join()
}

/// The peak resident memory of this process (VmHWM), in bytes, where /proc reports it.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The prefix of `path` that ends at its first state satisfying `hit`, and its encoding:
/// Stateright's DFS may record a discovery some steps after the state that made it, and a
/// trace reads best when its last step is the one that breaks the property.
pub fn shortest_prefix<M: Model>(
    model: &M,
    path: &Path<M::State, M::Action>,
    hit: impl Fn(&M::State) -> bool,
) -> Option<Discovery<M>>
where
    M::State: Debug + Hash + Clone + PartialEq,
    M::Action: Debug + Clone + PartialEq,
{
    let pairs = path.clone().into_vec();
    let first = pairs.iter().position(|(s, _)| hit(s))?;
    let init = pairs.first()?.0.clone();
    let actions: Vec<M::Action> = pairs[..first]
        .iter()
        .filter_map(|(_, a)| a.clone())
        .collect();
    let prefix = Path::from_actions(model, init, actions.iter())?;
    let encoded = prefix.encode(model);
    Some((prefix, encoded))
}

/// Rebuilds the path that `--replay PATH` names (action indices separated by `/`, the first
/// one an initial state's) on `model`, the config `cfg` (for messages). Bad input is a
/// one-line error.
pub fn replay_path<M>(
    model: &M,
    encoded: &str,
    cfg: &dyn std::fmt::Display,
) -> anyhow::Result<Path<M::State, M::Action>>
where
    M: Model,
    M::State: Clone + PartialEq,
    M::Action: Clone + PartialEq,
{
    let indices = encoded
        .trim()
        .trim_matches('/')
        .split('/')
        .map(|t| {
            t.parse::<usize>().map_err(|_| {
                anyhow::anyhow!("--replay: '{t}' is not an action index (expected e.g. 0/4/1)")
            })
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    let Some((first, rest)) = indices.split_first() else {
        anyhow::bail!("--replay: empty path");
    };
    let inits = model.init_states();
    let Some(init) = inits.get(*first).cloned() else {
        anyhow::bail!(
            "--replay: no initial state {first} (there are {})",
            inits.len()
        );
    };
    let mut state = init.clone();
    let mut taken = Vec::new();
    for (step, ai) in rest.iter().enumerate() {
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        let Some(action) = actions.get(*ai).cloned() else {
            anyhow::bail!(
                "--replay: step {} has no action {ai} (there are {}); was the path printed for this exact config ({cfg})?",
                step + 1,
                actions.len()
            );
        };
        if let Some(next) = model.next_state(&state, action.clone()) {
            state = next;
        }
        taken.push(action);
    }
    let Some(path) = Path::from_actions(model, init, taken.iter()) else {
        anyhow::bail!("--replay: the path does not replay on {cfg} (a step is a no-op)");
    };
    Ok(path)
}

/// Settings from the options; errors on combinations that cannot mean what they say.
pub fn settings(search: &crate::cli::SearchArgs) -> anyhow::Result<Settings> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut timeout = search.timeout.map(Duration::from_secs);
    if search.strategy == Strategy::Simulation && timeout.is_none() {
        timeout = Some(Duration::from_secs(30));
    }
    Ok(Settings {
        strategy: search.strategy,
        symmetry: search.symmetry_on(),
        // The simulation walker is one thread, so that a seed replays exactly.
        threads: if search.strategy == Strategy::Simulation {
            1
        } else {
            search
                .threads
                .map_or(cores, |t| usize::try_from(t).unwrap_or(cores))
        },
        seed: search.seed,
        depth: search
            .depth
            .map(|d| usize::try_from(d).unwrap_or(usize::MAX)),
        timeout,
    })
}
