//! The report of one check: built by a protocol, printed as text for a person or as one JSON
//! document (`--json`, schema `replicore-check/1`, documented in `docs/checking.md`).

use crate::runner::{Settings, Stop};
use serde::Serialize;
use std::fmt::Write as _;

/// The JSON schema name; bump it when a field changes meaning or goes away.
pub const SCHEMA: &str = "replicore-check/1";

/// Exit code: every property as expected.
pub const EXIT_OK: i32 = 0;
/// Exit code: a safety or liveness violation, or an unreached reachability property.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: stopped by `--timeout`/`--depth` (or a simulation) before the space was exhausted.
pub const EXIT_PARTIAL: i32 = 3;
/// Exit code: a `--mutant` run that no property refuted; the config cannot see the bug.
pub const EXIT_SURVIVED: i32 = 4;

/// A depth-first counterexample longer than this gets a hint to rerun breadth first.
const LONG_TRACE: usize = 12;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The protocol's command-line name.
    pub protocol: &'static str,
    /// The requested config, in one line.
    pub config: String,
    /// The requested config, field by field (protocol-specific keys).
    pub config_fields: serde_json::Value,
    /// The config whose space the main run explored, and why it may differ.
    pub explored: Explored,
    /// The search settings.
    pub run: Settings,
    /// Counts of the main run.
    pub counts: Counts,
    /// Whether every verdict below is final (the space was exhausted).
    pub complete: bool,
    /// What stopped the run early, if anything (`timeout`, `depth`, `simulation`).
    pub stopped_by: Option<Stop>,
    /// One row per property, the graph liveness check last.
    pub properties: Vec<PropertyRow>,
    /// The liveness graph check, if it ran or was skipped.
    pub liveness_graph: Option<GraphCheck>,
    /// One per violation, numbered from 1.
    pub counterexamples: Vec<Counterexample>,
    /// With `--mutant`: whether this config refuted it.
    pub mutant: Option<MutantCheck>,
    /// The process exit code.
    pub exit_code: i32,
}

/// The outcome of a `--mutant` run.
#[derive(Debug, Serialize)]
pub struct MutantCheck {
    /// The mutant's `--mutant` name.
    pub name: &'static str,
    /// The property the model says it breaks.
    pub breaks: &'static str,
    /// Whether some property was violated on this config.
    pub refuted: bool,
    /// The command line of the config the model knows refutes it.
    pub refuted_by: String,
}

/// The explored config.
#[derive(Debug, Serialize)]
pub struct Explored {
    /// The explored config, in one line.
    pub config: String,
    /// Why it is the one explored.
    pub reason: String,
}

/// The counts of the main run.
#[derive(Debug, Serialize)]
pub struct Counts {
    /// States visited, with repeats.
    pub states: usize,
    /// Unique states after symmetry reduction (equal to `states` for a simulation).
    pub unique_states: usize,
    /// The deepest state seen; the initial state has depth 1.
    pub max_depth: usize,
    /// Wall time of the main run, in seconds.
    pub elapsed_secs: f64,
    /// `states / elapsed_secs`.
    pub states_per_sec: f64,
    /// The process's peak resident memory (VmHWM) at the end, in bytes.
    pub peak_memory_bytes: Option<u64>,
}

/// The kind of a property.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Safety: true in every reachable state.
    Always,
    /// Reachability: true in some reachable state.
    Sometimes,
    /// Liveness, Stateright's: true somewhere on every path to a terminal state.
    Eventually,
    /// Liveness, our graph check: a goal stays reachable from every state.
    Graph,
}

impl Kind {
    /// The lower-case name used in text and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Always => "always",
            Kind::Sometimes => "sometimes",
            Kind::Eventually => "eventually",
            Kind::Graph => "graph",
        }
    }
}

/// A verdict.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No violation in the exhausted space.
    Holds,
    /// A counterexample exists.
    Violated,
    /// A witness exists.
    Reached,
    /// No witness in the exhausted space.
    NotReached,
    /// Nothing found, but the space was not exhausted.
    Undecided,
    /// Not checked (see `note`).
    Skipped,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Violated => "VIOLATED",
            Verdict::Reached => "reached",
            Verdict::NotReached => "NOT REACHED",
            Verdict::Undecided => "undecided",
            Verdict::Skipped => "skipped",
        }
    }
}

/// The verdict of a Stateright finding: whether the property was discovered (a violation for
/// Always/Eventually, a witness for Sometimes) and whether the space was exhausted.
pub fn verdict(
    expectation: &stateright::Expectation,
    found: bool,
    complete: bool,
) -> (Kind, Verdict) {
    use stateright::Expectation as E;
    let kind = match expectation {
        E::Always => Kind::Always,
        E::Sometimes => Kind::Sometimes,
        E::Eventually => Kind::Eventually,
    };
    let result = match (kind, found, complete) {
        (_, false, false) => Verdict::Undecided,
        (Kind::Sometimes, true, _) => Verdict::Reached,
        (Kind::Sometimes, false, true) => Verdict::NotReached,
        (_, true, _) => Verdict::Violated,
        (_, false, true) => Verdict::Holds,
    };
    (kind, result)
}

/// One property's row.
#[derive(Debug, Serialize)]
pub struct PropertyRow {
    /// The property's stable id (kebab-case; it never changes once published).
    pub id: String,
    /// The property's name (a short sentence; it may be reworded).
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The verdict.
    pub result: Verdict,
    /// Which config's space decided it, or why it was skipped.
    pub note: Option<String>,
    /// The number of its counterexample in `counterexamples`, if violated.
    pub counterexample: Option<usize>,
}

/// The liveness graph check's figures.
#[derive(Debug, Serialize)]
pub struct GraphCheck {
    /// Whether it ran; when not, `skipped` says why.
    pub ran: bool,
    /// Why it was skipped.
    pub skipped: Option<String>,
    /// Unique states explored (with symmetry).
    pub unique_states: usize,
    /// Fair edges kept.
    pub fair_edges: usize,
    /// Goal (converged) states.
    pub goal_states: usize,
    /// Whether it stopped at its state bound.
    pub truncated: bool,
    /// Wall time, in seconds.
    pub elapsed_secs: f64,
}

/// One node's state after the last step of a counterexample.
#[derive(Debug, Serialize)]
pub struct NodeRow {
    /// "master", "slave 1", "client".
    pub node: String,
    /// The node's role.
    pub role: String,
    /// Its committed version (the client: requests answered).
    pub version: u64,
    /// Its data, or the client's progress.
    pub data: String,
    /// The version of its prepared (or pending, on the master) two-phase update.
    pub prepared: Option<u64>,
    /// Whether it is down.
    pub crashed: bool,
    /// The version its storage would restore, if it saved anything.
    pub saved_version: Option<u64>,
    /// Anything else worth a look, in words.
    pub detail: String,
}

/// A numbered counterexample.
#[derive(Debug, Serialize)]
pub struct Counterexample {
    /// Its number, from 1.
    pub number: usize,
    /// The property it violates.
    pub property: String,
    /// The path as Stateright action indices (`Path::encode`).
    pub path: String,
    /// The config (in one line) the path belongs to.
    pub config: String,
    /// A command that prints this trace again.
    pub replay: String,
    /// A command that opens the Explorer, and the address of the last state in it.
    pub explore: String,
    /// Each step in words, in order.
    pub steps: Vec<String>,
    /// Every node after the last step.
    pub final_state: Vec<NodeRow>,
}

impl Report {
    /// Fills each property row's stable id from `ids` (id, name) pairs; a name not listed
    /// gets its words in kebab-case.
    pub fn with_ids(mut self, ids: &[(&str, &str)]) -> Self {
        for p in &mut self.properties {
            p.id = ids
                .iter()
                .find(|(_, name)| *name == p.name)
                .map_or_else(|| kebab(&p.name), |(id, _)| id.to_string());
        }
        self
    }

    /// For a `--mutant` run: records whether it was refuted, and exits
    /// [`EXIT_SURVIVED`] when a complete check refuted nothing.
    pub fn expect_mutant(
        mut self,
        name: &'static str,
        breaks: &'static str,
        refuted_by: String,
    ) -> Self {
        let refuted = self
            .properties
            .iter()
            .any(|p| p.result == Verdict::Violated);
        if !refuted && self.exit_code == EXIT_OK {
            self.exit_code = EXIT_SURVIVED;
        }
        self.mutant = Some(MutantCheck {
            name,
            breaks,
            refuted,
            refuted_by,
        });
        self
    }

    /// Renders the report for a person.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "config:   {}", self.config);
        if self.explored.config != self.config {
            let _ = writeln!(w, "explored: {}", self.explored.config);
        }
        let _ = writeln!(w, "          {}", self.explored.reason);
        let symmetry = if self.run.symmetry {
            "symmetry on"
        } else {
            "symmetry off"
        };
        let mut run = format!(
            "{}, {symmetry}, {} thread(s)",
            self.run.strategy.name(),
            self.run.threads
        );
        if self.run.strategy == crate::runner::Strategy::Simulation {
            let _ = write!(run, ", seed {}", self.run.seed);
        }
        if let Some(d) = self.run.depth {
            let _ = write!(run, ", depth {d}");
        }
        if let Some(t) = self.run.timeout {
            let _ = write!(run, ", timeout {} s", t.as_secs());
        }
        let _ = writeln!(w, "search:   {run}");
        let _ = writeln!(w);
        let c = &self.counts;
        let _ = writeln!(w, "states       {}", c.states);
        let _ = writeln!(w, "unique       {}", c.unique_states);
        let _ = writeln!(w, "max depth    {}", c.max_depth);
        let _ = writeln!(w, "elapsed      {:.2} s", c.elapsed_secs);
        let _ = writeln!(w, "states/s     {:.0}", c.states_per_sec);
        match c.peak_memory_bytes {
            Some(b) => {
                let _ = writeln!(w, "peak memory  {:.1} MiB", b as f64 / (1024.0 * 1024.0));
            }
            None => {
                let _ = writeln!(w, "peak memory  unknown");
            }
        }
        if let Some(g) = &self.liveness_graph
            && g.ran
        {
            let _ = writeln!(
                w,
                "graph check  {} unique states, {} fair edges, {} converged, {:.2} s{}",
                g.unique_states,
                g.fair_edges,
                g.goal_states,
                g.elapsed_secs,
                if g.truncated {
                    " (TRUNCATED: not exhausted)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(w);
        for p in &self.properties {
            let mut line = format!("  {:<12} {:<10} {}", p.result.text(), p.kind.name(), p.name);
            if let Some(n) = p.counterexample {
                let _ = write!(line, "  [counterexample {n}]");
            }
            if let Some(note) = &p.note {
                let _ = write!(line, "  ({note})");
            }
            let _ = writeln!(w, "{line}");
        }
        for cx in &self.counterexamples {
            let _ = writeln!(w);
            let _ = writeln!(w, "Counterexample {}: {}", cx.number, cx.property);
            let _ = writeln!(w, "  on {}", cx.config);
            for (i, s) in cx.steps.iter().enumerate() {
                let _ = writeln!(w, "  {:>3}. {s}", i + 1);
            }
            let _ = writeln!(w, "  after the last step:");
            for n in &cx.final_state {
                let _ = writeln!(w, "    {}", node_line(n));
            }
            let _ = writeln!(w, "  replay:  {}", cx.replay);
            let _ = writeln!(w, "  explore: {}", cx.explore);
            if self.run.strategy == crate::runner::Strategy::Dfs && cx.steps.len() > LONG_TRACE {
                let _ = writeln!(
                    w,
                    "  hint:    a depth-first trace is rarely the shortest; rerun with --strategy bfs for the shortest one"
                );
            }
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "{}", self.summary());
        out
    }

    /// The last line of the text report.
    pub fn summary(&self) -> String {
        let violated = self
            .properties
            .iter()
            .filter(|p| p.result == Verdict::Violated)
            .count();
        let unreached = self
            .properties
            .iter()
            .filter(|p| p.result == Verdict::NotReached)
            .count();
        if let Some(m) = &self.mutant {
            if self.exit_code == EXIT_SURVIVED {
                return format!(
                    "MUTANT SURVIVED: no property refuted '{}' on this config; it breaks \"{}\", refuted by: {}",
                    m.name, m.breaks, m.refuted_by
                );
            }
            if m.refuted {
                return format!(
                    "REFUTED (as expected for mutant '{}'): {violated} violated, {unreached} not reached",
                    m.name
                );
            }
        }
        match self.exit_code {
            EXIT_OK => "OK: every property as expected".into(),
            EXIT_PARTIAL => {
                let why = self.stopped_by.map_or_else(
                    || "the liveness graph check stopped at its state bound".to_string(),
                    |s| s.describe(&self.run),
                );
                format!(
                    "PARTIAL CHECK, NOT A PROOF: {why}; undecided properties were not disproved, only not seen"
                )
            }
            _ => {
                let undecided = self
                    .properties
                    .iter()
                    .filter(|p| p.result == Verdict::Undecided)
                    .count();
                let mut line = format!("FAILED: {violated} violated, {unreached} not reached");
                if undecided > 0 {
                    line.push_str(&format!(
                        "; {undecided} undecided (that part of the check is partial, not a proof)"
                    ));
                }
                line
            }
        }
    }
}

/// One node in one line.
pub fn node_line(n: &NodeRow) -> String {
    let mut line = format!("{:<8} v{} data {}", n.node, n.version, n.data);
    if n.role == "client" {
        line = format!("{:<8} {}", n.node, n.data);
    }
    if let Some(p) = n.prepared {
        let _ = write!(line, ", prepared v{p}");
    }
    if n.crashed {
        match n.saved_version {
            Some(v) => {
                let _ = write!(line, ", CRASHED (saved v{v})");
            }
            None => line.push_str(", CRASHED (nothing saved)"),
        }
    }
    if !n.detail.is_empty() {
        let _ = write!(line, ", {}", n.detail);
    }
    line
}

/// Prints `report` (as text, or as one JSON document with `json`), says loudly on stderr when
/// the check was partial, and returns its exit code.
pub fn finish(report: &Report, json: bool) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    if json {
        crate::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(report).context("encoding the report")?
        ));
    } else {
        crate::emit(&report.text());
    }
    if report.exit_code == EXIT_PARTIAL || report.exit_code == EXIT_SURVIVED {
        eprintln!("replicore-check: {}", report.summary());
    }
    Ok(report.exit_code)
}

/// `name` in kebab-case: lower-case words joined by `-`.
fn kebab(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// Prints a `--replay` trace (`cx`, ending at `state`) and every property of `model` at its
/// last state, as text or as one JSON document. Exits [`EXIT_FAILED`] when the trace ends in
/// a violation of a safety property, [`EXIT_OK`] otherwise.
pub fn replay<M: stateright::Model>(
    protocol: &'static str,
    model: &M,
    config: String,
    cx: &Counterexample,
    state: &M::State,
    json: bool,
) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    let props: Vec<(&'static str, stateright::Expectation, bool)> = model
        .properties()
        .iter()
        .map(|p| (p.name, p.expectation.clone(), (p.condition)(model, state)))
        .collect();
    let violated: Vec<&str> = props
        .iter()
        .filter(|(_, e, v)| *e == stateright::Expectation::Always && !v)
        .map(|(n, _, _)| *n)
        .collect();
    let code = if violated.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    };
    if json {
        let doc = serde_json::json!({
            "schema": SCHEMA,
            "protocol": protocol,
            "config": config,
            "trace": cx,
            "at_last_state": props.iter().map(|(n, _, v)| serde_json::json!({"name": n, "value": v})).collect::<Vec<_>>(),
            "violated": violated,
            "exit_code": code,
        });
        crate::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).context("encoding the trace")?
        ));
        return Ok(code);
    }
    let mut out = format!("config: {config}\n");
    for (i, s) in cx.steps.iter().enumerate() {
        out.push_str(&format!("  {:>3}. {s}\n", i + 1));
    }
    out.push_str("  after the last step:\n");
    for n in &cx.final_state {
        out.push_str(&format!("    {}\n", node_line(n)));
    }
    out.push_str("  at the last state:\n");
    for (name, _, value) in &props {
        out.push_str(&format!(
            "    {:<6} {name}\n",
            if *value { "true" } else { "false" }
        ));
    }
    if !violated.is_empty() {
        out.push_str(&format!(
            "VIOLATED at the last state: {}\n",
            violated.join("; ")
        ));
    }
    crate::emit(&out);
    Ok(code)
}
