//! Protocol 1, master/slave replication: builds the config from the options, runs the
//! checks the model defines, and tells counterexamples in words. No protocol logic and no
//! property lives here; the model owns both.

use crate::cli::{MasterSlaveArgs, SearchArgs};

use crate::protocol::{MutantInfo, PropertyInfo, Protocol};
use crate::report::{
    Counterexample, Counts, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Explored, GraphCheck, Kind,
    NodeRow, PropertyRow, Report, SCHEMA, Verdict, verdict,
};
use crate::runner::{self, Settings, Strategy, shortest_prefix};
use crate::suite::SuiteRun;
use anyhow::bail;
use replicore_explore::liveness::GraphReport;
use replicore_explore::{Jump, Liveness, Options, plain_fingerprint};
use replicore_model::master_slave::model::suite;
use replicore_model::master_slave::model::words::{beat_text, data_text, node_name, step_text};
use replicore_model::master_slave::model::{
    Audit, BLIND_TO, MasterSlaveModel, MasterSlaveState, canonical_fingerprint, forget_dead,
    is_fair, lose_all, lose_all_actions, props, recovery_blind_fingerprint_of_normalized,
    representative, script_text,
};
use replicore_model::master_slave::{
    Beat, MasterSlaveConfig, Msg, Mutant, NetworkKind, NodeState, Saved, Timer,
};
use replicore_model::store::ModelKv;
use replicore_model::suite::Tier;
use stateright::actor::{ActorModelAction, Id};
use stateright::{Expectation, Model, Path};
use std::time::Duration;

/// The protocol's command-line name.
pub const NAME: &str = "master-slave";

/// The row `--audit` adds: the reductions' assumptions, checked on every generated state
/// ([`replicore_model::master_slave::model::Audit`]).
pub const AUDIT: &str = "the reductions' assumptions hold on every generated state (audit)";

/// Every property's stable id, the audit's row included.
fn ids() -> Vec<(&'static str, &'static str)> {
    let mut ids = props::IDS.to_vec();
    ids.push(("audit", AUDIT));
    ids
}

/// Protocol 1 for `list`.
pub struct MasterSlave;

impl Protocol for MasterSlave {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "protocol 1: a master replicates to N slaves by one-phase announcements and two-phase prepare/commit, repaired by heartbeats"
    }

    fn properties(&self) -> Vec<PropertyInfo> {
        let mut out: Vec<PropertyInfo> = Vec::new();
        // The property set depends on the config; these two configs together name every one.
        let crash_free = MasterSlaveConfig {
            max_crashes: 0,
            ..MasterSlaveConfig::default()
        };
        let grouped = MasterSlaveConfig {
            clients: 3,
            ..MasterSlaveConfig::default()
        };
        for cfg in [MasterSlaveConfig::default(), crash_free, grouped] {
            for p in cfg.into_model().properties() {
                if out.iter().any(|o| o.name == p.name) {
                    continue;
                }
                let (kind, when) = match p.expectation {
                    Expectation::Always => (Kind::Always, "safety, every config"),
                    Expectation::Sometimes => (Kind::Sometimes, sometimes_when(p.name)),
                    Expectation::Eventually => (
                        Kind::Eventually,
                        "liveness at terminal states, only with --crashes 0",
                    ),
                };
                out.push(PropertyInfo {
                    name: p.name,
                    kind,
                    when,
                });
            }
        }
        out.push(PropertyInfo {
            name: props::CONVERGENCE_REACHABLE,
            kind: Kind::Graph,
            when: "liveness, our graph check: in the main pass with crashes allowed, else on the lossy config",
        });
        out
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        Mutant::ALL
            .iter()
            .map(|m| MutantInfo {
                name: m.name(),
                description: m.description(),
                breaks: m.breaks().0,
                refuted_by: refuted_by(&m.breaks().1),
            })
            .collect()
    }

    fn suite(&self, tier: Tier) -> Vec<SuiteRun> {
        let mutants = Mutant::ALL.into_iter().map(|m| {
            let (breaks, cfg) = m.breaks();
            (m.name(), m.description(), breaks, cfg)
        });
        crate::suite::runs(NAME, suite::cases(), tier, mutants, config_args, run)
    }
}

fn sometimes_when(name: &str) -> &'static str {
    match name {
        props::REACH_TWO_PHASE_COMMIT | props::REACH_ABORT => "reachability, scripts with 2p or rb",
        props::REACH_ROLLBACK => "reachability, scripts with rb",
        props::REACH_GROUP_COMMIT => "reachability, --clients 3 or more and scripts with 2p",
        props::REACH_DELTA => "reachability, lossy networks and 2+ updates",
        props::REACH_SNAPSHOT => "reachability, lossy networks and a script longer than --history",
        props::REACH_RECOVERY => "reachability, --crashes 1 or more",
        _ => "reachability",
    }
}

/// Builds the config from the options: an absent option keeps the default's value.
pub fn config(args: &MasterSlaveArgs) -> anyhow::Result<MasterSlaveConfig> {
    let mut cfg = MasterSlaveConfig::default();
    if let Some(n) = args.slaves {
        cfg.slaves = usize::from(n);
    }
    if let Some(s) = &args.script {
        cfg.script = s.0.clone();
    }
    if let Some(n) = args.clients {
        cfg.clients = usize::from(n);
    }
    if let Some(n) = args.network {
        cfg.network = n.kind;
        cfg.lossy = n.lossy;
    }
    if let Some(k) = args.crashes {
        cfg.max_crashes = usize::from(k);
    }
    if let Some(h) = args.history {
        cfg.history_bound = usize::from(h);
    }
    if let Some(k) = args.disk_faults {
        cfg.disk_faults = usize::from(k);
    }
    cfg.own_keys = args.own_keys;
    cfg.master_faults = args.master_faults;
    cfg.mutant = args.mutant;
    if cfg.master_faults && cfg.disk_faults == 0 {
        bail!("--master-faults needs --disk-faults 1 or more: it lets one of them hit the master");
    }
    if cfg.disk_faults > 0 && cfg.max_crashes == 0 {
        bail!(
            "--disk-faults {} needs --crashes 1 or more: a disk fails while its server is down",
            cfg.disk_faults
        );
    }
    if cfg.max_crashes > cfg.slaves + 1 {
        bail!(
            "--crashes {} is more than the {} servers (1 master + {} slaves)",
            cfg.max_crashes,
            cfg.slaves + 1,
            cfg.slaves
        );
    }
    Ok(cfg)
}

/// The options that rebuild `cfg` exactly.
pub fn config_args(cfg: &MasterSlaveConfig) -> String {
    let mut s = format!(
        "--slaves {} --script {} --network {}{} --crashes {} --history {}",
        cfg.slaves,
        script_text(&cfg.script),
        if cfg.lossy { "lossy," } else { "" },
        cfg.network.name(),
        cfg.max_crashes,
        cfg.history_bound
    );
    if cfg.clients != 1 {
        s.push_str(&format!(" --clients {}", cfg.clients));
    }
    if cfg.own_keys {
        s.push_str(" --own-keys");
    }
    if cfg.disk_faults > 0 {
        s.push_str(&format!(" --disk-faults {}", cfg.disk_faults));
    }
    if cfg.master_faults {
        s.push_str(" --master-faults");
    }
    if let Some(m) = cfg.mutant {
        s.push_str(&format!(" --mutant {}", m.name()));
    }
    s
}

/// The command line that checks `cfg` (a mutant's refuting config, for the report and `list`).
fn refuted_by(cfg: &MasterSlaveConfig) -> String {
    format!("replicore-check {NAME} {}", config_args(cfg))
}

fn config_fields(cfg: &MasterSlaveConfig) -> serde_json::Value {
    serde_json::json!({
        "slaves": cfg.slaves,
        "script": script_text(&cfg.script),
        "clients": cfg.clients,
        "own_keys": cfg.own_keys,
        "network": cfg.network.name(),
        "lossy": cfg.lossy,
        "crashes": cfg.max_crashes,
        "history": cfg.history_bound,
        "disk_faults": cfg.disk_faults,
        "master_faults": cfg.master_faults,
        "mutant": cfg.mutant.map(Mutant::name),
    })
}

/// Runs `replicore-check master-slave` and returns the exit code.
pub fn main(args: &MasterSlaveArgs, search: &SearchArgs) -> anyhow::Result<i32> {
    let cfg = config(args)?;
    if let Some(addr) = &search.explore {
        let (a, b, c) = (cfg.clone(), cfg.clone(), cfg.clone());
        let model = crate::explorer::Worded::new(
            cfg.clone().into_model(),
            move |action| replicore_model::master_slave::model::words::action_text(&a, action),
            move |last, action, next| step_text(&b, last, action, next),
            move |s| nodes(&c, s),
        )?;
        return crate::explorer::serve(model, &cfg, addr);
    }
    if let Some(path) = &search.replay {
        return replay(cfg, path, search.json);
    }
    crate::report::finish(&run(&cfg, search)?, search.json)
}

/// The report of `cfg` under `search`: the check, the ids, and the mutant's verdict.
pub fn run(cfg: &MasterSlaveConfig, search: &SearchArgs) -> anyhow::Result<Report> {
    let settings = runner::settings(search)?;
    let report = check(cfg, &settings, search)?.with_ids(&ids());
    let report = match cfg.mutant {
        Some(m) => report.expect_mutant(m.name(), m.breaks().0, refuted_by(&m.breaks().1)),
        None => report,
    };
    Ok(report)
}

/// Whether the search of `cfg` explores losses all at once ([`lose_all`]): on a lossy
/// duplicating network, unless `--no-reduction`.
fn lose_all_at_once(cfg: &MasterSlaveConfig, no_reduction: bool) -> bool {
    !no_reduction && cfg.lossy && cfg.network == NetworkKind::UnorderedDuplicating
}

/// How the search explores `cfg`, in the report's words.
fn search_reason(cfg: &MasterSlaveConfig, no_reduction: bool) -> String {
    if no_reduction {
        "explored as given (--no-reduction)".into()
    } else if lose_all_at_once(cfg, false) {
        "losses explored all at once: single losses are not explored, \"every message in flight is lost\" is, from every state (lose_all); safety and reachability are decided exactly (MasterSlaveConfig::safety_equivalent), and so are Eventually and the liveness graph".into()
    } else {
        "explored as given".into()
    }
}

/// The model of `model`'s loss-free twin ([`MasterSlaveConfig::safety_equivalent`]),
/// carrying every property of `model` that the twin's lacks: each is decided exactly on the
/// loss-free space too, by the argument of `safety_equivalent`.
fn lossless_model(model: &MasterSlaveModel) -> MasterSlaveModel {
    let mut lossless = model.cfg.safety_equivalent().into_model();
    let have: Vec<&str> = lossless.properties().iter().map(|p| p.name).collect();
    let missing: Vec<_> = model
        .properties()
        .into_iter()
        .filter(|p| !have.contains(&p.name) && p.expectation != Expectation::Eventually)
        .collect();
    for p in missing {
        lossless = lossless.property(p.expectation, p.name, p.condition);
    }
    lossless
}

/// A second search of [`confirm_on_exact_space`]: which properties it decided, and how far it
/// got.
struct ExactRun {
    names: Vec<&'static str>,
    unique: usize,
    elapsed: std::time::Duration,
    stopped: Option<runner::Stop>,
}

/// A search with the recovery-blind fingerprint
/// ([`replicore_model::master_slave::model::recovery_blind_fingerprint`]) can miss a
/// discovery of the properties in [`BLIND_TO`] but never invent one: when it exhausted the
/// space without reaching one of them, this searches again with the exact
/// [`canonical_fingerprint`] and puts that search's findings for them into `outcome`.
/// `searched` is the model searched, `reported` the one paths are reported on (see
/// [`Options::path_model`]).
fn confirm_on_exact_space(
    searched: &MasterSlaveModel,
    reported: &MasterSlaveModel,
    settings: &Settings,
    outcome: &mut runner::Outcome<MasterSlaveModel>,
) -> Option<ExactRun> {
    let missed: Vec<usize> = (0..outcome.findings.len())
        .filter(|i| BLIND_TO.contains(&outcome.findings[*i].name) && !outcome.findings[*i].found)
        .collect();
    if outcome.stopped.is_some() || missed.is_empty() {
        return None;
    }
    let mut options = Options::new(&canonical_fingerprint);
    options.normalize = Some(&forget_dead);
    options.path_model = Some(reported);
    let (exact, _) = runner::explore(searched, settings, options);
    let run = ExactRun {
        names: missed.iter().map(|i| outcome.findings[*i].name).collect(),
        unique: exact.unique,
        elapsed: exact.elapsed,
        stopped: exact.stopped,
    };
    for (i, finding) in exact.findings.into_iter().enumerate() {
        if missed.contains(&i) {
            outcome.findings[i] = finding;
        }
    }
    Some(run)
}

/// The full check: the main run, then the liveness graph check.
pub fn check(
    cfg: &MasterSlaveConfig,
    settings: &Settings,
    search: &SearchArgs,
) -> anyhow::Result<Report> {
    let reason = search_reason(cfg, search.no_reduction);
    let model = cfg.clone().into_model();
    let has_eventually = model
        .properties()
        .iter()
        .any(|p| p.expectation == Expectation::Eventually);
    let mut settings = settings.clone();
    let mut reason = reason;
    // The simulation's walks end where they close a cycle, seen through the representative;
    // it forgets dead messages, which can make a terminal state look like a visited one.
    if has_eventually && settings.symmetry && settings.strategy == Strategy::Simulation {
        settings.symmetry = false;
        reason.push_str(
            "; symmetry off: the representative forgets dead messages, unsound for Eventually",
        );
    }
    // An exhaustive search runs replicore's explorer (depth first on every thread, breadth
    // first on one): one pass decides every property and the liveness graph. Its
    // `Eventually` is judged at quiescent states, which no reduction here changes.
    let one_pass = settings.strategy != Strategy::Simulation;
    if one_pass && settings.strategy == Strategy::Bfs {
        settings.threads = 1;
    }
    let settings = &settings;
    let with_graph = one_pass && graph_skip(cfg, settings, search, true).is_none();
    let mut audit_result: Option<(Option<String>, usize)> = None;
    let (outcome, pass, exact) = if one_pass {
        let goal = |s: &MasterSlaveState| props::converged(cfg, s);
        let liveness = with_graph.then_some(Liveness {
            fair: &is_fair,
            goal: &goal,
            bound_reaches_goal: true,
        });
        let fingerprint: &(dyn Fn(&MasterSlaveState) -> u64 + Sync) = if settings.symmetry {
            // The states are normalized by `forget_dead` (below).
            &recovery_blind_fingerprint_of_normalized
        } else {
            &plain_fingerprint::<MasterSlaveState>
        };
        let max_states = if with_graph {
            search.graph_max_states
        } else {
            usize::MAX
        };
        // On a lossy duplicating network the loss-free twin is searched, with every loss at
        // once as a jump where the liveness graph needs it; paths are reported on the model
        // itself.
        let lossless = lose_all_at_once(cfg, search.no_reduction).then(|| lossless_model(&model));
        let searched = lossless.as_ref().unwrap_or(&model);
        // The dead messages the canonical fingerprint ignores are dropped from the states too;
        // with --audit, each generated state is audited first.
        let audit = search.audit.then(|| Audit::new(searched));
        let symmetry = settings.symmetry;
        let audited = |s: &mut MasterSlaveState| {
            if let Some(a) = &audit {
                a.state(s);
            }
            if symmetry {
                forget_dead(s);
            }
        };
        let normalize: Option<&(dyn Fn(&mut MasterSlaveState) + Sync)> =
            (settings.symmetry || search.audit).then_some(&audited);
        let mut options = Options::new(fingerprint);
        options.normalize = normalize;
        options.liveness = liveness;
        options.max_states = max_states;
        if lossless.is_some() {
            options.path_model = Some(&model);
            // The jump is for liveness: the graph, and `Eventually` after losses.
            if with_graph || has_eventually {
                options.jump = Some(Jump {
                    apply: &lose_all,
                    actions: &lose_all_actions,
                    fair_only_after: Some(&is_fair),
                });
            }
        }
        let (mut outcome, graph) = runner::explore(searched, settings, options);
        audit_result = audit.as_ref().map(|a| (a.failure(), a.audited()));
        let pass = graph.map(|g| OnePassGraph {
            unique_states: outcome.unique,
            stopped: outcome.stopped,
            elapsed: outcome.elapsed,
            graph: g,
        });
        let exact = settings
            .symmetry
            .then(|| confirm_on_exact_space(searched, &model, settings, &mut outcome))
            .flatten();
        (outcome, pass, exact)
    } else {
        (
            runner::run(model.clone(), settings, Some(representative)),
            None,
            None,
        )
    };
    let judge = &model;
    let complete = outcome.stopped.is_none();

    let mut properties = Vec::new();
    let mut counterexamples = Vec::new();
    for f in &outcome.findings {
        let rechecked = exact.as_ref().filter(|e| e.names.contains(&f.name));
        let complete = rechecked.map_or(complete, |e| e.stopped.is_none());
        let (kind, result) = verdict(&f.expectation, f.found, complete);
        let mut note = None;
        if let Some(e) = rechecked {
            note = Some(format!(
                "not reached with the recovery-blind fingerprint; decided on the exact space ({} unique states, {:.2} s{})",
                e.unique,
                e.elapsed.as_secs_f64(),
                if e.stopped.is_some() { ", stopped" } else { "" }
            ));
        }
        let mut result = result;
        if settings.strategy == Strategy::Simulation
            && kind == Kind::Eventually
            && result == Verdict::Violated
        {
            // Stateright's simulation judges Eventually where a walk stops, and a walk also
            // stops where it closes a cycle, which is not a terminal state.
            result = Verdict::Undecided;
            note = Some(
                "a simulation cannot judge Eventually: a walk that closes a cycle looks terminal"
                    .into(),
            );
        }
        if let (Verdict::Violated | Verdict::Reached, Some((path, _))) = (result, &f.discovery) {
            // The trace must end where the property says it does; say so if it does not.
            let expected = kind == Kind::Sometimes;
            let condition = judge
                .properties()
                .into_iter()
                .find(|p| p.name == f.name)
                .map(|p| p.condition);
            if kind != Kind::Eventually
                && condition.is_some_and(|c| c(judge, path.last_state()) != expected)
            {
                note = Some(
                    "the recorded trace does not end in the discovery (a Stateright path quirk)"
                        .into(),
                );
            }
        }
        if f.found && f.discovery.is_none() {
            note = Some("its trace could not be rebuilt (a Stateright simulation bug); rerun with --strategy dfs".into());
        }
        let mut counterexample = None;
        if result == Verdict::Violated
            && let Some((path, encoded)) = &f.discovery
        {
            let number = counterexamples.len() + 1;
            let (path, encoded) = match (
                kind,
                judge.properties().into_iter().find(|p| p.name == f.name),
            ) {
                (Kind::Always, Some(p)) => {
                    shortest_prefix(judge, path, |s| !(p.condition)(judge, s))
                        .unwrap_or_else(|| (path.clone(), encoded.clone()))
                }
                _ => (path.clone(), encoded.clone()),
            };
            counterexamples.push(counterexample_of(number, f.name, cfg, path, &encoded));
            counterexample = Some(number);
        }
        properties.push(PropertyRow {
            id: String::new(),
            name: f.name.to_string(),
            kind,
            result,
            note,
            counterexample,
        });
    }

    if let Some((failure, audited)) = audit_result {
        properties.push(PropertyRow {
            id: String::new(),
            name: AUDIT.to_string(),
            kind: Kind::Always,
            result: match (&failure, complete) {
                (Some(_), _) => Verdict::Violated,
                (None, true) => Verdict::Holds,
                (None, false) => Verdict::Undecided,
            },
            note: Some(failure.unwrap_or_else(|| format!("{audited} states audited"))),
            counterexample: None,
        });
    } else if search.audit {
        properties.push(PropertyRow {
            id: String::new(),
            name: AUDIT.to_string(),
            kind: Kind::Always,
            result: Verdict::Skipped,
            note: Some("a simulation is not audited".into()),
            counterexample: None,
        });
    }

    let graph = graph_check(
        &model,
        settings,
        search,
        complete,
        pass,
        &mut properties,
        &mut counterexamples,
    );

    let states_per_sec = outcome.states as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
    let violated = properties.iter().any(|p| p.result == Verdict::Violated);
    let undecided = properties.iter().any(|p| p.result == Verdict::Undecided);
    let unreached = properties.iter().any(|p| p.result == Verdict::NotReached);
    // A verdict that is final (a violation, or a reachability property not reached in an
    // exhausted space) outranks what a partial part of the check left open.
    let exit_code = if violated || unreached {
        EXIT_FAILED
    } else if undecided {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    };
    Ok(Report {
        schema: SCHEMA,
        protocol: NAME,
        config: cfg.to_string(),
        config_fields: config_fields(cfg),
        explored: Explored {
            config: cfg.to_string(),
            reason,
        },
        run: settings.clone(),
        counts: Counts {
            states: outcome.states,
            unique_states: outcome.unique,
            max_depth: outcome.max_depth,
            elapsed_secs: outcome.elapsed.as_secs_f64(),
            states_per_sec,
            peak_memory_bytes: runner::peak_memory_bytes(),
        },
        complete: complete && !undecided,
        stopped_by: outcome.stopped,
        properties,
        liveness_graph: graph,
        counterexamples,
        mutant: None,
        exit_code,
    })
}

/// The liveness graph computed in the same pass as the main run.
struct OnePassGraph {
    unique_states: usize,
    stopped: Option<runner::Stop>,
    elapsed: Duration,
    graph: runner::Graph<MasterSlaveModel>,
}

/// Why the graph check does not run, if it does not.
fn graph_skip(
    cfg: &MasterSlaveConfig,
    settings: &Settings,
    search: &SearchArgs,
    main_complete: bool,
) -> Option<String> {
    let liveness_mutant = |m: Mutant| {
        matches!(
            m.breaks().0,
            props::CONVERGENCE_REACHABLE | props::CONVERGES
        )
    };
    if search.no_graph {
        Some("--no-graph".to_string())
    } else if settings.strategy == Strategy::Simulation {
        Some("a simulation does not exhaust the space".to_string())
    } else if !main_complete {
        Some("the main run was partial".to_string())
    } else if cfg.disk_faults > 0 {
        Some("liveness is not claimed under storage faults: a slave created again empty waits for the master's next heartbeat (docs/reliability.md)".to_string())
    } else {
        cfg.mutant
            .filter(|m| !liveness_mutant(*m))
            .map(|m| format!("mutant {} targets a safety property", m.name()))
    }
}

/// Reports the graph check computed in the main pass, or says why it did not run.
fn graph_check(
    model: &MasterSlaveModel,
    settings: &Settings,
    search: &SearchArgs,
    main_complete: bool,
    pass: Option<OnePassGraph>,
    properties: &mut Vec<PropertyRow>,
    counterexamples: &mut Vec<Counterexample>,
) -> Option<GraphCheck> {
    let cfg = &model.cfg;
    let Some(p) = pass else {
        // The pass keeps the graph whenever nothing skips it.
        let why = graph_skip(cfg, settings, search, main_complete)
            .unwrap_or_else(|| "not kept by the search".to_string());
        properties.push(PropertyRow {
            id: String::new(),
            name: props::CONVERGENCE_REACHABLE.to_string(),
            kind: Kind::Graph,
            result: Verdict::Skipped,
            note: Some(why.clone()),
            counterexample: None,
        });
        return Some(GraphCheck {
            ran: false,
            skipped: Some(why),
            unique_states: 0,
            fair_edges: 0,
            goal_states: 0,
            truncated: false,
            elapsed_secs: 0.0,
        });
    };
    let stop_note = p
        .stopped
        .map(|stop| format!("the one-pass search was {}", stop.describe(settings)));
    let g: GraphReport<MasterSlaveModel> = GraphReport {
        unique_states: p.unique_states,
        fair_edges: p.graph.fair_edges,
        goal_states: p.graph.goal_states,
        at_bound: p.graph.at_bound,
        truncated: p.stopped.is_some(),
        elapsed: p.elapsed,
        trap: p.graph.trap,
    };
    let mut counterexample = None;
    let result = if let Some(trap) = g.trap {
        let number = counterexamples.len() + 1;
        let encoded = trap.encode(model);
        counterexamples.push(counterexample_of(
            number,
            props::CONVERGENCE_REACHABLE,
            cfg,
            trap,
            &encoded,
        ));
        counterexample = Some(number);
        Verdict::Violated
    } else if g.truncated {
        Verdict::Undecided
    } else {
        Verdict::Holds
    };
    let note = if let Some(note) = stop_note {
        note
    } else if g.truncated {
        format!(
            "graph check stopped at --graph-max-states {}",
            search.graph_max_states
        )
    } else {
        "graph check on the config itself".to_string()
    };
    let note = if g.at_bound > 0 {
        format!(
            "{note}; {} states with a fair step past the model's bound on messages in flight count as converging",
            g.at_bound
        )
    } else {
        note
    };
    properties.push(PropertyRow {
        id: String::new(),
        name: props::CONVERGENCE_REACHABLE.to_string(),
        kind: Kind::Graph,
        result,
        note: Some(note),
        counterexample,
    });
    Some(GraphCheck {
        ran: true,
        skipped: None,
        unique_states: g.unique_states,
        fair_edges: g.fair_edges,
        goal_states: g.goal_states,
        truncated: g.truncated,
        elapsed_secs: g.elapsed.as_secs_f64(),
    })
}

type Action = ActorModelAction<Msg<ModelKv>, Timer, ()>;

/// A numbered counterexample: the steps in words, the final state, and how to see it again.
fn counterexample_of(
    number: usize,
    property: &str,
    cfg: &MasterSlaveConfig,
    path: Path<MasterSlaveState, Action>,
    encoded: &str,
) -> Counterexample {
    let (steps, last) = trace(cfg, path);
    let args = config_args(cfg);
    Counterexample {
        number,
        property: property.to_string(),
        path: encoded.to_string(),
        config: cfg.to_string(),
        replay: format!("replicore-check {NAME} {args} --replay {encoded}"),
        explore: format!(
            "replicore-check {NAME} {args} --explore, then open http://127.0.0.1:3000/#/steps/{encoded}"
        ),
        steps,
        final_state: nodes(cfg, &last),
    }
}

/// Every step of `path` in words, and the last state.
fn trace(
    cfg: &MasterSlaveConfig,
    path: Path<MasterSlaveState, Action>,
) -> (Vec<String>, MasterSlaveState) {
    let pairs = path.into_vec();
    let mut steps = Vec::new();
    for w in pairs.windows(2) {
        if let (before, Some(action)) = &w[0] {
            steps.push(step_text(cfg, before, action, &w[1].0));
        }
    }
    // A path always ends with its last state (Path's own invariant).
    let last = pairs
        .last()
        .map(|(s, _)| s.clone())
        .expect("a path has a last state");
    (steps, last)
}

/// Every node of `s`, as rows.
fn nodes(cfg: &MasterSlaveConfig, s: &MasterSlaveState) -> Vec<NodeRow> {
    s.actor_states
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let node = node_name(cfg, Id::from(i));
            let crashed = s.crashed.get(i).copied().unwrap_or(false);
            let saved_version = s
                .actor_storages
                .get(i)
                .and_then(Option::as_ref)
                .map(Saved::version);
            match &**a {
                NodeState::Master(m) => {
                    let mut detail = vec![format!("next version {}", m.user.next_version)];
                    if let Some(d) = m.last_decision {
                        detail.push(format!(
                            "last decision {}",
                            beat_text(&Beat {
                                version: m.user.version,
                                decision: Some(d)
                            })
                        ));
                    }
                    if m.pending.is_some() {
                        let votes: Vec<String> =
                            m.votes.iter().map(|v| node_name(cfg, *v)).collect();
                        detail.push(format!("votes [{}]", votes.join(", ")));
                    }
                    if !m.queue.is_empty() {
                        detail.push(format!("{} queued", m.queue.len()));
                    }
                    NodeRow {
                        node,
                        role: "master".into(),
                        version: m.user.version,
                        data: data_text(&m.user.data),
                        prepared: m.pending.as_ref().map(|p| p.step.new),
                        crashed,
                        saved_version,
                        detail: detail.join(", "),
                    }
                }
                NodeState::Slave(sl) => {
                    let mut detail = Vec::new();
                    if let Some(w) = &sl.waiting {
                        detail.push(format!("waiting to prepare v{} on v{}", w.new, w.prior));
                    }
                    if sl.recovered {
                        detail.push("restarted".to_string());
                    }
                    NodeRow {
                        node,
                        role: "slave".into(),
                        version: sl.user.version,
                        data: data_text(&sl.user.data),
                        prepared: sl.user.prepared.as_ref().map(|p| p.new),
                        crashed,
                        saved_version,
                        detail: detail.join(", "),
                    }
                }
                NodeState::Client(c) => NodeRow {
                    node,
                    role: "client".into(),
                    version: c.next,
                    data: format!(
                        "{} of {} updates answered",
                        c.next.min(cfg.script.len() as u64),
                        cfg.script.len()
                    ),
                    prepared: None,
                    crashed,
                    saved_version,
                    detail: String::new(),
                },
            }
        })
        .collect()
}

/// `--replay PATH`: prints the trace of a path of action indices on `cfg` exactly as given,
/// and every property at its last state.
fn replay(cfg: MasterSlaveConfig, encoded: &str, json: bool) -> anyhow::Result<i32> {
    let model = cfg.clone().into_model();
    let path = runner::replay_path(&model, encoded, &cfg)?;
    let state = path.last_state().clone();
    let cx = counterexample_of(1, "replay", &cfg, path, encoded.trim());
    crate::report::replay(NAME, &model, cfg.to_string(), &cx, &state, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicore_model::master_slave::model::{recovery_blind_fingerprint, script};

    /// When the recovery-blind search misses the recovery property, the exact search decides
    /// it: here the miss is simulated on a config that reaches it.
    #[test]
    fn a_missed_recovery_is_decided_on_the_exact_space() {
        let cfg = MasterSlaveConfig {
            slaves: 1,
            script: script("1p"),
            lossy: false,
            ..Default::default()
        };
        let model = cfg.into_model();
        let settings = Settings {
            strategy: Strategy::Dfs,
            symmetry: true,
            threads: 1,
            seed: 0,
            depth: None,
            timeout: None,
        };
        let mut options = Options::new(&recovery_blind_fingerprint);
        options.normalize = Some(&forget_dead);
        let (mut outcome, _) = runner::explore(&model, &settings, options);
        let i = outcome
            .findings
            .iter()
            .position(|f| f.name == props::REACH_RECOVERY)
            .expect("a config with a crash has the recovery property");
        assert!(outcome.findings[i].found);
        assert!(
            confirm_on_exact_space(&model, &model, &settings, &mut outcome).is_none(),
            "nothing to confirm"
        );
        outcome.findings[i].found = false;
        outcome.findings[i].discovery = None;
        let exact =
            confirm_on_exact_space(&model, &model, &settings, &mut outcome).expect("a rerun");
        assert_eq!(exact.names, vec![props::REACH_RECOVERY]);
        assert!(exact.stopped.is_none());
        assert!(
            exact.unique > outcome.unique,
            "{} vs {}",
            exact.unique,
            outcome.unique
        );
        assert!(outcome.findings[i].found);
        assert!(outcome.findings[i].discovery.is_some());
    }
}
