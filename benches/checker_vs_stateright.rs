//! Our explorer beside Stateright's own checkers on the same model: Stateright's Single
//! Decree Paxos example (`benches/paxos/model.rs`, 3 servers, `check N` = N clients, the
//! example's default unordered non-duplicating network), exhausted by
//!
//! - `explore dfs`: `replicore_explore::explore`, depth first, plain fingerprint of the whole
//!   state (no reduction: the model offers none), one worker;
//! - `explore bfs`: the same, breadth first;
//! - `stateright dfs` and `stateright bfs`: `model.checker().threads(1).spawn_dfs()` /
//!   `.spawn_bfs()`, as the example's `check-dfs` / `check-bfs` run them but on one thread.
//!
//! Each run is a child process (this binary again, with `--child`), so its peak resident
//! memory (`VmHWM` of `/proc/self/status`) is its own; the process's baseline (a few MB) is
//! included. The report gives states generated per second (Stateright's `state_count`, our
//! `states`: both count repeats) and the ratios to Stateright's checkers. The unique counts of
//! all four must agree, which the run asserts: the checkers explore the same space.
//!
//! `cargo bench -p replicore --bench checker_vs_stateright` runs `check 3` (about a minute
//! per checker on one core); `-- 2 3 6` picks the client counts, `--threads N` the workers
//! (our DFS and Stateright's both use N; BFS ours is one worker always).
//! `cargo test -p replicore --release --bench checker_vs_stateright` runs `check 1` once with
//! each checker, as a smoke check (a second).

#[path = "paxos/model.rs"]
// Kept as Stateright wrote it, hence the lints it does not follow.
#[allow(dead_code, clippy::collapsible_if)]
mod paxos;

use paxos::{PaxosActor, PaxosModelCfg, Value};
use replicore_explore::{Options, Order, explore, plain_fingerprint};
use stateright::actor::register::RegisterActor;
use stateright::actor::{ActorModel, Id, Network};
use stateright::semantics::LinearizabilityTester;
use stateright::semantics::register::Register;
use stateright::{Checker, Expectation, Model};
use std::process::Command;
use std::time::Instant;

/// The four checkers, by the name the report uses.
const CHECKERS: [&str; 4] = [
    "explore-dfs",
    "explore-bfs",
    "stateright-dfs",
    "stateright-bfs",
];

/// What one child run measured.
#[derive(Clone, Copy, Debug)]
struct Run {
    states: usize,
    unique: usize,
    elapsed_s: f64,
    peak_kib: u64,
}

impl Run {
    fn states_per_s(&self) -> f64 {
        self.states as f64 / self.elapsed_s
    }
}

/// The example's model.
type PaxosModel = ActorModel<
    RegisterActor<PaxosActor>,
    PaxosModelCfg,
    LinearizabilityTester<Id, Register<Value>>,
>;

/// The example's model with `clients` clients and 3 servers.
fn model(clients: usize) -> PaxosModel {
    PaxosModelCfg {
        client_count: clients,
        server_count: 3,
        network: Network::new_unordered_nonduplicating([]),
    }
    .into_model()
}

/// Peak resident set of this process, from `/proc/self/status` (`VmHWM`, in KiB).
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// States generated, unique states, and whether an `Always` property failed, of a finished
/// Stateright check.
fn outcome<C: Checker<PaxosModel>>(c: C) -> (usize, usize, bool) {
    assert!(c.is_done());
    let violated = c
        .model()
        .properties()
        .iter()
        .any(|p| p.expectation == Expectation::Always && c.discovery(p.name).is_some());
    (c.state_count(), c.unique_state_count(), violated)
}

/// Runs one checker to the end in this process and prints `states unique seconds peak_kib`.
fn child(checker: &str, clients: usize, threads: usize) {
    let model = model(clients);
    let started = Instant::now();
    let (states, unique, violated) = match checker {
        "explore-dfs" | "explore-bfs" => {
            let mut options = Options::new(&plain_fingerprint);
            options.threads = threads;
            options.order = if checker == "explore-dfs" {
                Order::DepthFirst
            } else {
                Order::BreadthFirst
            };
            let e = explore(&model, options);
            assert!(e.cut.is_none(), "the space was not exhausted");
            let properties = model.properties();
            let violated = properties
                .iter()
                .zip(&e.discoveries)
                .any(|(p, d)| p.expectation == Expectation::Always && d.is_some());
            (e.states, e.unique, violated)
        }
        "stateright-dfs" => outcome(model.checker().threads(threads).spawn_dfs().join()),
        "stateright-bfs" => outcome(model.checker().threads(threads).spawn_bfs().join()),
        other => panic!("unknown checker {other}"),
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    assert!(
        !violated,
        "paxos is linearizable; a checker found otherwise"
    );
    println!("{states} {unique} {elapsed_s} {}", peak_kib());
}

/// Runs `checker` in a child process and parses its line.
fn run(checker: &str, clients: usize, threads: usize) -> Run {
    // The running binary is this bench: invariant of how it was started.
    let exe = std::env::current_exe().expect("the bench binary's path");
    let out = Command::new(exe)
        .args([
            "--child",
            checker,
            &clients.to_string(),
            &threads.to_string(),
        ])
        .output()
        .expect("the child process starts");
    assert!(
        out.status.success(),
        "{checker} check {clients} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 4, "unexpected child output: {text}");
    Run {
        states: f[0].parse().expect("states"),
        unique: f[1].parse().expect("unique"),
        elapsed_s: f[2].parse().expect("seconds"),
        peak_kib: f[3].parse().expect("peak"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let clients = args[2].parse().expect("clients");
        let threads = args[3].parse().expect("threads");
        child(&args[1], clients, threads);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then a smoke run.
    let full = args.iter().any(|a| a == "--bench");
    let mut threads = 1;
    let mut counts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--threads" {
            threads = it.next().and_then(|n| n.parse().ok()).expect("--threads N");
        } else if let Ok(n) = a.parse::<usize>() {
            counts.push(n);
        }
    }
    if counts.is_empty() {
        counts.push(if full { 3 } else { 1 });
    }
    println!("paxos (Stateright's example, 3 servers), {threads} thread(s)");
    println!(
        "{:>7} {:>15} {:>12} {:>10} {:>9} {:>12} {:>9} {:>11} {:>11}",
        "check",
        "checker",
        "states",
        "unique",
        "seconds",
        "states/s",
        "peak MiB",
        "vs SR dfs",
        "vs SR bfs"
    );
    for clients in counts {
        let runs: Vec<(&str, Run)> = CHECKERS
            .iter()
            .map(|c| (*c, run(c, clients, threads)))
            .collect();
        let unique = runs[0].1.unique;
        for (c, r) in &runs {
            assert_eq!(r.unique, unique, "{c} counted another space");
        }
        let sr_dfs = runs[2].1;
        let sr_bfs = runs[3].1;
        for (c, r) in &runs {
            println!(
                "{:>7} {:>15} {:>12} {:>10} {:>9.2} {:>12.0} {:>9.1} {:>5.2}x/{:<4.2}m {:>5.2}x/{:<4.2}m",
                format!("check {clients}"),
                c,
                r.states,
                r.unique,
                r.elapsed_s,
                r.states_per_s(),
                r.peak_kib as f64 / 1024.0,
                r.states_per_s() / sr_dfs.states_per_s(),
                r.peak_kib as f64 / sr_dfs.peak_kib as f64,
                r.states_per_s() / sr_bfs.states_per_s(),
                r.peak_kib as f64 / sr_bfs.peak_kib as f64,
            );
        }
    }
    println!("ratios: Nx = states/s over Stateright's; Nm = peak memory over Stateright's");
}
