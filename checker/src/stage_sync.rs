//! Protocol 4, stage-ordered peer sync: builds the config from the options, runs the model's
//! checks and the liveness graph check in one pass, and tells counterexamples in words. No
//! protocol logic and no property lives here; the model owns both.

use crate::cli::{SearchArgs, StageArgs};

use crate::protocol::{MutantInfo, PropertyInfo, Protocol};
use crate::report::{
    Counterexample, Counts, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Explored, GraphCheck, Kind,
    NodeRow, PropertyRow, Report, SCHEMA, Verdict, verdict,
};
use crate::runner::{self, Settings, Strategy, shortest_prefix};
use crate::suite::SuiteRun;
use anyhow::bail;
use replicore_explore::{Liveness, Options, plain_fingerprint};
use replicore_model::stage_sync::model::{
    StageAction, StageModel, StageState, canonical_fingerprint, converged_goal, fair, props,
};
use replicore_model::stage_sync::msg::Sync;
use replicore_model::stage_sync::suite;
use replicore_model::stage_sync::{
    Edit, Mutant, PeerState, Scenario, StageConfig, StageMsg, Timer,
};
use replicore_model::suite::Tier;
use stateright::actor::{ActorModelAction, Id};
use stateright::{Expectation, Model, Path};

/// The protocol's command-line name.
pub const NAME: &str = "stage-sync";

/// Protocol 4 for `list`.
pub struct StageSync;

impl Protocol for StageSync {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "protocol 4: peers execute operations at once and agree on one order by execution stage and priority, undoing and redoing what loses"
    }

    fn properties(&self) -> Vec<PropertyInfo> {
        let mut out: Vec<PropertyInfo> = Vec::new();
        for s in Scenario::ALL {
            for p in StageConfig::scenario(s).into_model().properties() {
                if out.iter().any(|o| o.name == p.name) {
                    continue;
                }
                let (kind, when) = match p.expectation {
                    Expectation::Always if p.name == props::STARVATION => {
                        (Kind::Always, "bounded liveness, scenario starve")
                    }
                    Expectation::Always if p.name == props::STABLE => {
                        (Kind::Always, "safety, with the stability line on")
                    }
                    Expectation::Always => (Kind::Always, "safety, every config"),
                    Expectation::Sometimes => (Kind::Sometimes, sometimes_when(p.name)),
                    Expectation::Eventually => (Kind::Eventually, "liveness"),
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
            when: "liveness, our graph check, in the same pass",
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
        props::REACH_REQUEUED => "reachability, three peers",
        props::REACH_TRUNCATED => "reachability, with the stability line on",
        _ => "reachability, every config",
    }
}

/// Builds the config from the options: an absent option keeps the scenario's value.
pub fn config(args: &StageArgs) -> anyhow::Result<StageConfig> {
    let mut cfg = StageConfig::scenario(args.scenario.unwrap_or(Scenario::Race));
    if let Some(o) = args.ordering {
        cfg.ordering = o;
    }
    if let Some(s) = args.stability {
        cfg.stability = s.0;
    }
    if let Some(lossy) = args.network {
        cfg.lossy = lossy.0;
    }
    if let Some(k) = args.crashes {
        cfg.max_crashes = usize::from(k);
    }
    cfg.mutant = args.mutant;
    if cfg.max_crashes > cfg.peers() {
        bail!(
            "--crashes {} is more than the {} peers",
            cfg.max_crashes,
            cfg.peers()
        );
    }
    Ok(cfg)
}

/// The options that rebuild `cfg` exactly.
pub fn config_args(cfg: &StageConfig) -> String {
    let mut s = format!(
        "--scenario {} --ordering {} --stability {} --network {}duplicating --crashes {}",
        cfg.scenario.name(),
        cfg.ordering.name(),
        if cfg.stability { "on" } else { "off" },
        if cfg.lossy { "lossy," } else { "" },
        cfg.max_crashes,
    );
    if let Some(m) = cfg.mutant {
        s.push_str(&format!(" --mutant {}", m.name()));
    }
    s
}

/// The command line that checks `cfg` (a mutant's refuting config, for the report and `list`).
fn refuted_by(cfg: &StageConfig) -> String {
    format!("replicore-check {NAME} {}", config_args(cfg))
}

fn config_fields(cfg: &StageConfig) -> serde_json::Value {
    serde_json::json!({
        "scenario": cfg.scenario.name(),
        "peers": cfg.peers(),
        "ops": cfg.ops(),
        "ordering": cfg.ordering.name(),
        "stability": cfg.stability,
        "lossy": cfg.lossy,
        "crashes": cfg.max_crashes,
        "mutant": cfg.mutant.map(Mutant::name),
    })
}

/// Runs `replicore-check stage-sync` and returns the exit code.
pub fn main(args: &StageArgs, search: &SearchArgs) -> anyhow::Result<i32> {
    let cfg = config(args)?;
    if let Some(addr) = &search.explore {
        let model = crate::explorer::Worded::new(
            cfg.clone().into_model(),
            step_text,
            |_, action, _| step_text(action),
            nodes,
        )?;
        return crate::explorer::serve(model, &cfg, addr);
    }
    if let Some(path) = &search.replay {
        return replay(cfg, path, search.json);
    }
    crate::report::finish(&run(&cfg, search)?, search.json)
}

/// The report of `cfg` under `search`: the check, the ids, and the mutant's verdict.
pub fn run(cfg: &StageConfig, search: &SearchArgs) -> anyhow::Result<Report> {
    let mut settings = crate::runner::settings(search)?;
    // No symmetry to reduce by (its peers have distinct priorities): the report says so.
    settings.symmetry = false;
    let report = check(cfg, &settings, search).with_ids(props::IDS);
    let report = match cfg.mutant {
        Some(m) => report.expect_mutant(m.name(), m.breaks().0, refuted_by(&m.breaks().1)),
        None => report,
    };
    Ok(report)
}

/// The full check of `cfg`: the properties and, in the same pass (dfs or bfs), the liveness
/// graph check.
pub fn check(cfg: &StageConfig, settings: &Settings, search: &SearchArgs) -> Report {
    let model = cfg.clone().into_model();
    let reduce = !search.no_reduction;
    let fingerprint = move |s: &StageState| {
        if reduce {
            canonical_fingerprint(s)
        } else {
            plain_fingerprint(s)
        }
    };
    let goal = converged_goal(cfg);
    let graph_on = !search.no_graph && settings.strategy != Strategy::Simulation;
    let (outcome, graph) = if settings.strategy == Strategy::Simulation {
        (runner::run(cfg.clone().into_model(), settings, None), None)
    } else {
        let liveness = graph_on.then_some(Liveness {
            fair: &fair,
            goal: &goal,
            bound_reaches_goal: false,
        });
        let max_states = if graph_on {
            search.graph_max_states
        } else {
            usize::MAX
        };
        let mut options = Options::new(&fingerprint);
        options.liveness = liveness;
        options.max_states = max_states;
        runner::explore(&model, settings, options)
    };
    let complete = outcome.stopped.is_none();
    let mut properties = Vec::new();
    let mut counterexamples = Vec::new();
    for f in &outcome.findings {
        let (kind, result) = verdict(&f.expectation, f.found, complete);
        let mut counterexample = None;
        if result == Verdict::Violated
            && let Some((path, encoded)) = &f.discovery
        {
            let number = counterexamples.len() + 1;
            let (path, encoded) = match model
                .properties()
                .into_iter()
                .find(|p| p.name == f.name && p.expectation == Expectation::Always)
            {
                Some(p) => shortest_prefix(&model, path, |s| !(p.condition)(&model, s))
                    .unwrap_or_else(|| (path.clone(), encoded.clone())),
                None => (path.clone(), encoded.clone()),
            };
            counterexamples.push(counterexample_of(number, f.name, cfg, path, &encoded));
            counterexample = Some(number);
        }
        properties.push(PropertyRow {
            id: String::new(),
            name: f.name.to_string(),
            kind,
            result,
            note: None,
            counterexample,
        });
    }
    let liveness_graph = match graph {
        Some(g) => {
            let mut counterexample = None;
            let result = if let Some(trap) = g.trap {
                let number = counterexamples.len() + 1;
                let encoded = trap.encode(&model);
                counterexamples.push(counterexample_of(
                    number,
                    props::CONVERGENCE_REACHABLE,
                    cfg,
                    trap,
                    &encoded,
                ));
                counterexample = Some(number);
                Verdict::Violated
            } else if !complete {
                Verdict::Undecided
            } else {
                Verdict::Holds
            };
            properties.push(PropertyRow {
                id: String::new(),
                name: props::CONVERGENCE_REACHABLE.to_string(),
                kind: Kind::Graph,
                result,
                note: Some("graph check on the config itself, in the same pass".into()),
                counterexample,
            });
            Some(GraphCheck {
                ran: true,
                skipped: None,
                unique_states: outcome.unique,
                fair_edges: g.fair_edges,
                goal_states: g.goal_states,
                truncated: !complete,
                elapsed_secs: outcome.elapsed.as_secs_f64(),
            })
        }
        None => {
            let why = if search.no_graph {
                "--no-graph"
            } else {
                "simulation never exhausts the space"
            };
            properties.push(PropertyRow {
                id: String::new(),
                name: props::CONVERGENCE_REACHABLE.to_string(),
                kind: Kind::Graph,
                result: Verdict::Skipped,
                note: Some(why.into()),
                counterexample: None,
            });
            Some(GraphCheck {
                ran: false,
                skipped: Some(why.into()),
                unique_states: 0,
                fair_edges: 0,
                goal_states: 0,
                truncated: false,
                elapsed_secs: 0.0,
            })
        }
    };
    let violated = properties
        .iter()
        .any(|p| matches!(p.result, Verdict::Violated | Verdict::NotReached));
    let undecided = properties.iter().any(|p| p.result == Verdict::Undecided);
    let exit_code = if violated {
        EXIT_FAILED
    } else if undecided {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    };
    Report {
        schema: SCHEMA,
        protocol: NAME,
        config: cfg.to_string(),
        config_fields: config_fields(cfg),
        explored: Explored {
            config: cfg.to_string(),
            reason: if reduce {
                "explored as given; states that differ only in dead messages are one (stage_sync::model::canonical_fingerprint)".into()
            } else {
                "explored as given, without reduction".into()
            },
        },
        run: settings.clone(),
        counts: Counts {
            states: outcome.states,
            unique_states: outcome.unique,
            max_depth: outcome.max_depth,
            elapsed_secs: outcome.elapsed.as_secs_f64(),
            states_per_sec: outcome.states as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
            peak_memory_bytes: runner::peak_memory_bytes(),
        },
        complete: complete && !undecided,
        stopped_by: outcome.stopped,
        properties,
        liveness_graph,
        counterexamples,
        mutant: None,
        exit_code,
    }
}

fn counterexample_of(
    number: usize,
    property: &str,
    cfg: &StageConfig,
    path: Path<StageState, StageAction>,
    encoded: &str,
) -> Counterexample {
    let pairs = path.into_vec();
    let steps = pairs
        .iter()
        .filter_map(|(_, a)| a.as_ref().map(step_text))
        .collect();
    let args = config_args(cfg);
    let final_state = pairs.last().map(|(s, _)| nodes(s)).unwrap_or_default();
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
        final_state,
    }
}

fn node(id: Id) -> String {
    format!("peer {}", usize::from(id))
}

fn step_text(action: &StageAction) -> String {
    match action {
        ActorModelAction::Deliver { src, dst, msg } => {
            format!(
                "{} receives {} from {}",
                node(*dst),
                msg_text(msg),
                node(*src)
            )
        }
        ActorModelAction::Drop(env) => format!(
            "network drops {} from {} to {}",
            msg_text(&env.msg),
            node(env.src),
            node(env.dst)
        ),
        ActorModelAction::Timeout(id, timer) => {
            let what = match timer {
                Timer::Edit => "user makes the next edit",
                Timer::Resend => "re-sends its unstable operations",
            };
            format!("{} {what}", node(*id))
        }
        ActorModelAction::Crash(id) => format!("{} crashes", node(*id)),
        ActorModelAction::Recover(id) => format!("{} restarts from its saved state", node(*id)),
        ActorModelAction::SelectRandom { actor, .. } => format!("{} picks", node(*actor)),
    }
}

fn edit_text(e: &Edit<u8>) -> String {
    match e {
        Edit::Insert { at, value } => format!("insert {value} at {at}"),
        Edit::Remove { at } => format!("remove at {at}"),
    }
}

fn sync_text(m: &Sync<u8>) -> String {
    let c = &m.current;
    let prev = m
        .previous
        .map_or("none".to_string(), |p| format!("{}@{}", p.id, p.stage));
    format!(
        "{}#{}@{} ({}) after {prev}, priority age {} peer {}",
        c.id,
        c.attempt,
        c.stage,
        edit_text(&c.edit),
        m.priority.age,
        m.priority.peer
    )
}

/// A message in a trace.
pub fn msg_text(msg: &StageMsg<u8>) -> String {
    match msg {
        StageMsg::Sync(m) => format!("Sync{{{}}}", sync_text(m)),
        StageMsg::Report(r) => {
            let ops: Vec<String> = r.ops.iter().map(ToString::to_string).collect();
            format!(
                "Report#{}{{base {}, journal [{}]}}",
                r.seq,
                r.base,
                ops.join(", ")
            )
        }
        StageMsg::Edit(e) => format!("Edit{{{}}}", edit_text(e)),
        StageMsg::Edited { id, stage } => format!("Edited{{{id}@{stage}}}"),
        StageMsg::Show => "Show".into(),
        StageMsg::Document { stage, items, .. } => format!("Document{{stage {stage}, {items:?}}}"),
    }
}

fn peer_detail(p: &PeerState<u8>) -> String {
    let journal: Vec<String> = p
        .journal
        .iter()
        .map(|e| format!("{}#{}", e.sync.current.id, e.sync.current.attempt))
        .collect();
    let mut detail = vec![format!(
        "stable {}, journal above it [{}]",
        p.base.stage,
        journal.join(", ")
    )];
    if !p.waiting.is_empty() {
        let w: Vec<String> = p.waiting.values().map(sync_text).collect();
        detail.push(format!("waiting [{}]", w.join("; ")));
    }
    if !p.redo.is_empty() {
        let r: Vec<String> = p.redo.values().map(sync_text).collect();
        detail.push(format!("redo [{}]", r.join("; ")));
    }
    detail.join(", ")
}

fn nodes(s: &StageState) -> Vec<NodeRow> {
    s.actor_states
        .iter()
        .enumerate()
        .map(|(i, p)| NodeRow {
            node: node(Id::from(i)),
            role: "peer".into(),
            version: u64::from(p.stage()),
            data: format!("{:?}", p.doc.items),
            prepared: None,
            crashed: s.crashed.get(i).copied().unwrap_or(false),
            saved_version: s
                .actor_storages
                .get(i)
                .and_then(Option::as_ref)
                .map(|st| u64::from(st.stage())),
            detail: peer_detail(p),
        })
        .collect()
}

/// `--replay PATH`: prints the trace of a path of action indices on `cfg` exactly as given,
/// and every property at its last state.
fn replay(cfg: StageConfig, encoded: &str, json: bool) -> anyhow::Result<i32> {
    let model: StageModel = cfg.clone().into_model();
    let path = runner::replay_path(&model, encoded, &cfg)?;
    let state = path.last_state().clone();
    let cx = counterexample_of(1, "replay", &cfg, path, encoded.trim());
    crate::report::replay(NAME, &model, cfg.to_string(), &cx, &state, json)
}
