//! Drives one Stateright checker run, whatever the protocol: picks the strategy, polls the
//! checker handle for a live progress line, joins it and collects the discoveries.
//!
//! Stateright's own `report()` exits 0 whatever it finds, so the verdict is made here from
//! `discoveries()` and the properties' expectations.

use serde::Serialize;
use stateright::{Checker, CheckerBuilder, Expectation, Model, Path, UniformChooser};
use std::fmt::Debug;
use std::hash::Hash;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How the state space is searched.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Breadth first: shortest counterexamples, holds whole states in memory, no symmetry.
    Bfs,
    /// Depth first: fingerprints only, symmetry reduction.
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
    /// The path to the discovery: a violation for Always/Eventually, a witness for Sometimes.
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
    let started = Instant::now();
    match settings.strategy {
        Strategy::Bfs => collect(builder.spawn_bfs(), settings, started),
        Strategy::Dfs => collect(builder.spawn_dfs(), settings, started),
        Strategy::Simulation => collect(
            builder.spawn_simulation(settings.seed, UniformChooser),
            settings,
            started,
        ),
    }
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
    let mut discoveries = checker.discoveries();
    let findings: Vec<Finding<M>> = model
        .properties()
        .into_iter()
        .map(|p| Finding {
            name: p.name,
            expectation: p.expectation,
            discovery: discoveries.remove(p.name).map(|path| {
                let encoded = path.encode(model);
                (path, encoded)
            }),
        })
        .collect();
    let undecided = findings.iter().any(|f| f.discovery.is_none());
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
