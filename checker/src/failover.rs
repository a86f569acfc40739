//! Protocol 2, failover approver: builds the config from the options, runs the model's
//! checks (safety, reachability and the liveness graph in one pass of replicore's explorer),
//! and tells counterexamples in words. No protocol logic and no property lives here; the
//! model owns both.

use crate::cli::{FailoverArgs, SearchArgs};

use crate::protocol::{MutantInfo, PropertyInfo, Protocol};
use crate::report::{
    Counterexample, Counts, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Explored, GraphCheck, Kind,
    NodeRow, PropertyRow, Report, SCHEMA, Verdict, verdict,
};
use crate::runner::{self, Settings, Strategy, shortest_prefix};
use crate::suite::SuiteRun;
use anyhow::bail;
use replicore_explore::{Liveness, Options, plain_fingerprint};
use replicore_model::failover::model::{
    FailoverAction, FailoverModel, FailoverState, MemberState, props, script_text,
};
use replicore_model::failover::suite;
use replicore_model::failover::{
    Answer, ClientOp, Entry, FailoverConfig, Msg, Mutant, Pending, Timer, Variant,
};
use replicore_model::store::KvOp;
use replicore_model::suite::Tier;
use stateright::actor::{ActorModelAction, Id};
use stateright::{Expectation, Model, Path};

/// The protocol's command-line name.
pub const NAME: &str = "failover";

/// Protocol 2 for `list`.
pub struct Failover;

impl Protocol for Failover {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "protocol 2: a master approves updates, a designated backup takes over when the master's lease lapses (fenced epochs); --variant seed checks the claim as written"
    }

    fn properties(&self) -> Vec<PropertyInfo> {
        let mut out: Vec<PropertyInfo> = FailoverConfig::default()
            .into_model()
            .properties()
            .into_iter()
            .map(|p| {
                let (kind, when) = match p.expectation {
                    Expectation::Always => (Kind::Always, "safety, every config"),
                    Expectation::Sometimes if p.name == props::REACH_REJOIN => {
                        (Kind::Sometimes, "reachability, variant fenced")
                    }
                    Expectation::Sometimes => (Kind::Sometimes, "reachability, every config"),
                    Expectation::Eventually => (Kind::Eventually, "liveness"),
                };
                PropertyInfo {
                    name: p.name,
                    kind,
                    when,
                }
            })
            .collect();
        out.push(PropertyInfo {
            name: props::PENDING_COMPLETE,
            kind: Kind::Graph,
            when: "liveness, our graph check in the same pass, variant fenced",
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

/// Builds the config from the options: an absent option keeps the default's value.
pub fn config(args: &FailoverArgs) -> anyhow::Result<FailoverConfig> {
    let mut cfg = FailoverConfig::default();
    if let Some(v) = args.variant {
        cfg.variant = v;
    }
    if let Some(s) = &args.script {
        cfg.script = s.0.clone();
    }
    if let Some(n) = args.slaves {
        cfg.slaves = usize::from(n);
    }
    if let Some(lossy) = args.network {
        cfg.lossy = lossy.0;
    }
    if let Some(k) = args.crashes {
        cfg.max_crashes = usize::from(k);
    }
    cfg.mutant = args.mutant;
    if cfg.mutant.is_some() && cfg.variant == Variant::Seed {
        bail!("--mutant applies to the fenced variant; the seed variant is refuted as written");
    }
    if cfg.max_crashes > cfg.servers() {
        bail!(
            "--crashes {} is more than the {} servers",
            cfg.max_crashes,
            cfg.servers()
        );
    }
    Ok(cfg)
}

/// The options that rebuild `cfg` exactly.
pub fn config_args(cfg: &FailoverConfig) -> String {
    let mut s = format!(
        "--variant {} --script {} --slaves {} --network {}duplicating --crashes {}",
        cfg.variant.name(),
        script_text(&cfg.script),
        cfg.slaves,
        if cfg.lossy { "lossy," } else { "" },
        cfg.max_crashes,
    );
    if let Some(m) = cfg.mutant {
        s.push_str(&format!(" --mutant {}", m.name()));
    }
    s
}

/// The command line that checks `cfg` (a mutant's refuting config, for the report and `list`).
fn refuted_by(cfg: &FailoverConfig) -> String {
    format!("replicore-check {NAME} {}", config_args(cfg))
}

fn config_fields(cfg: &FailoverConfig) -> serde_json::Value {
    serde_json::json!({
        "variant": cfg.variant.name(),
        "script": script_text(&cfg.script),
        "slaves": cfg.slaves,
        "lossy": cfg.lossy,
        "crashes": cfg.max_crashes,
        "mutant": cfg.mutant.map(Mutant::name),
    })
}

/// Runs `replicore-check failover` and returns the exit code.
pub fn main(args: &FailoverArgs, search: &SearchArgs) -> anyhow::Result<i32> {
    let cfg = config(args)?;
    if let Some(addr) = &search.explore {
        let (a, b, c) = (cfg.clone(), cfg.clone(), cfg.clone());
        let model = crate::explorer::Worded::new(
            cfg.clone().into_model(),
            move |action| step_text(&a, action),
            move |_, action, _| step_text(&b, action),
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
pub fn run(cfg: &FailoverConfig, search: &SearchArgs) -> anyhow::Result<Report> {
    let mut settings = crate::runner::settings(search)?;
    // No symmetry to reduce by (its servers have distinct roles): the report says so.
    settings.symmetry = false;
    let report = check(cfg, &settings, search).with_ids(props::IDS);
    let report = match cfg.mutant {
        Some(m) => report.expect_mutant(m.name(), m.breaks().0, refuted_by(&m.breaks().1)),
        None => report,
    };
    Ok(report)
}

/// Why the graph check does not run on `cfg`, if it does not.
fn graph_skip(cfg: &FailoverConfig, settings: &Settings, search: &SearchArgs) -> Option<String> {
    if search.no_graph {
        Some("--no-graph".into())
    } else if settings.strategy == Strategy::Simulation {
        Some("a simulation does not exhaust the space".into())
    } else if cfg.variant == Variant::Seed {
        Some("the seed's scheme is refuted on safety; its liveness is not claimed".into())
    } else {
        cfg.mutant
            .filter(|m| m.breaks().0 != props::PENDING_COMPLETE)
            .map(|m| format!("mutant {} targets a safety property", m.name()))
    }
}

/// The full check of `cfg`: one pass of replicore's explorer decides safety and
/// reachability and, for the fenced variant, keeps the fair-edge graph for the liveness
/// check; a simulation goes to the shared random walker.
pub fn check(cfg: &FailoverConfig, settings: &Settings, search: &SearchArgs) -> Report {
    let skip = graph_skip(cfg, settings, search);
    // Loss is judged as given when the graph check runs (a lost message may leave a trap);
    // otherwise the loss-free space decides the same safety and reachability verdicts.
    let (explored, reason) = if search.no_reduction || !cfg.lossy || skip.is_none() {
        (cfg.clone(), "explored as given".to_string())
    } else {
        (
            cfg.safety_equivalent(),
            "safety and reachability are decided exactly on the loss-free space: on a duplicating network loss cannot change them (FailoverConfig::safety_equivalent)".to_string(),
        )
    };
    let model = explored.clone().into_model();
    let (outcome, graph) = if skip.is_none() {
        let goal_cfg = explored.clone();
        let goal = move |s: &FailoverState| props::settled(&goal_cfg, s);
        let liveness = Liveness {
            fair: &props::fair,
            goal: &goal,
            bound_reaches_goal: false,
        };
        let mut options = Options::new(&plain_fingerprint::<FailoverState>);
        options.liveness = Some(liveness);
        options.max_states = search.graph_max_states;
        runner::explore(&model, settings, options)
    } else {
        (
            runner::run(explored.clone().into_model(), settings, None),
            None,
        )
    };
    let complete = outcome.stopped.is_none();
    let mut properties = Vec::new();
    let mut counterexamples = Vec::new();
    for f in &outcome.findings {
        let (kind, result) = verdict(&f.expectation, f.found, complete);
        let mut counterexample = None;
        let mut note = None;
        if f.found && f.discovery.is_none() {
            note = Some("its trace could not be rebuilt; rerun with --strategy dfs".to_string());
        }
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
            counterexamples.push(counterexample_of(number, f.name, &explored, path, &encoded));
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
    let liveness_graph = match (&skip, graph) {
        (Some(_), _) | (None, None) => {
            let why = skip.clone().unwrap_or_else(|| "not run".into());
            properties.push(PropertyRow {
                id: String::new(),
                name: props::PENDING_COMPLETE.to_string(),
                kind: Kind::Graph,
                result: Verdict::Skipped,
                note: Some(why.clone()),
                counterexample: None,
            });
            GraphCheck {
                ran: false,
                skipped: Some(why),
                unique_states: 0,
                fair_edges: 0,
                goal_states: 0,
                truncated: false,
                elapsed_secs: 0.0,
            }
        }
        (None, Some(g)) => {
            let mut counterexample = None;
            let result = if let Some(trap) = g.trap {
                let number = counterexamples.len() + 1;
                let encoded = trap.encode(&model);
                counterexamples.push(counterexample_of(
                    number,
                    props::PENDING_COMPLETE,
                    &explored,
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
                name: props::PENDING_COMPLETE.to_string(),
                kind: Kind::Graph,
                result,
                note: Some(
                    "graph check in the same pass; fair steps: deliveries, timers, restarts of any server but the master".into(),
                ),
                counterexample,
            });
            GraphCheck {
                ran: true,
                skipped: None,
                unique_states: outcome.unique,
                fair_edges: g.fair_edges,
                goal_states: g.goal_states,
                truncated: !complete,
                elapsed_secs: outcome.elapsed.as_secs_f64(),
            }
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
            config: explored.to_string(),
            reason,
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
        liveness_graph: Some(liveness_graph),
        counterexamples,
        mutant: None,
        exit_code,
    }
}

fn counterexample_of(
    number: usize,
    property: &str,
    cfg: &FailoverConfig,
    path: Path<FailoverState, FailoverAction>,
    encoded: &str,
) -> Counterexample {
    let pairs = path.into_vec();
    let steps = pairs
        .iter()
        .filter_map(|(_, a)| a.as_ref().map(|a| step_text(cfg, a)))
        .collect();
    let args = config_args(cfg);
    let final_state = pairs.last().map(|(s, _)| nodes(cfg, s)).unwrap_or_default();
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

fn node(cfg: &FailoverConfig, id: Id) -> String {
    match usize::from(id) {
        0 => "master".to_string(),
        1 => "backup".to_string(),
        i if i == cfg.client() => "client".to_string(),
        i => format!("slave {i}"),
    }
}

fn step_text(cfg: &FailoverConfig, action: &FailoverAction) -> String {
    match action {
        ActorModelAction::Deliver { src, dst, msg } => format!(
            "{} receives {} from {}",
            node(cfg, *dst),
            msg_text(msg),
            node(cfg, *src)
        ),
        ActorModelAction::Drop(env) => format!(
            "network drops {} from {} to {}",
            msg_text(&env.msg),
            node(cfg, env.src),
            node(cfg, env.dst)
        ),
        ActorModelAction::Timeout(id, timer) => {
            let what = match timer {
                Timer::Heartbeat => "heartbeat timer fires",
                Timer::LeaseCheck => "lease check fires",
                Timer::Retry => "gets no answer and tries the other server",
            };
            format!("{} {what}", node(cfg, *id))
        }
        ActorModelAction::Crash(id) => format!("{} crashes", node(cfg, *id)),
        ActorModelAction::Recover(id) => {
            format!("{} restarts from its saved data", node(cfg, *id))
        }
        ActorModelAction::SelectRandom { actor, .. } => format!("{} picks", node(cfg, *actor)),
    }
}

fn op_text(op: &ClientOp<u8, u8>) -> String {
    match op {
        ClientOp::Update(KvOp::Put(k, v)) => format!("put {k}={v}"),
        ClientOp::Update(KvOp::Delete(k)) => format!("delete {k}"),
        ClientOp::Read(k) => format!("read {k}"),
    }
}

fn entry_text(e: &Entry<u8, u8>) -> String {
    format!("op {} of epoch {}", e.update.op, e.epoch)
}

/// A message in a trace.
pub fn msg_text(msg: &Msg<u8, u8>) -> String {
    match msg {
        Msg::Request {
            op,
            request,
            master_unable,
        } => format!(
            "Request#{op}{{{}{}}}",
            op_text(request),
            if *master_unable {
                ", master unable"
            } else {
                ""
            }
        ),
        Msg::Reply { op, epoch, answer } => match answer {
            Answer::Written { version } => {
                format!("Reply#{op}{{written at v{version}, epoch {epoch}}}")
            }
            Answer::Value { value, version } => format!(
                "Reply#{op}{{value {}, at v{version}, epoch {epoch}}}",
                value.map_or("none".to_string(), |v| v.to_string())
            ),
        },
        Msg::Advise {
            epoch,
            prior,
            entry,
        } => format!(
            "Advise{{epoch {epoch}, v{prior}→v{}, {}}}",
            prior + 1,
            entry_text(entry)
        ),
        Msg::Stored {
            epoch,
            version,
            update,
        } => format!("Stored{{epoch {epoch}, v{version}, op {}}}", update.op),
        Msg::Heartbeat { epoch, version } => format!("Heartbeat{{epoch {epoch}, v{version}}}"),
        Msg::Confirm { epoch, op } => format!("Confirm{{epoch {epoch}, read op {op}}}"),
        Msg::Confirmed { epoch, op } => format!("Confirmed{{epoch {epoch}, read op {op}}}"),
        Msg::DeltaRequest { epoch, from } => format!("DeltaRequest{{epoch {epoch}, from v{from}}}"),
        Msg::Delta {
            epoch,
            from,
            entries,
        } => format!(
            "Delta{{epoch {epoch}, v{from}→v{}}}",
            from + entries.len() as u64
        ),
    }
}

fn nodes(cfg: &FailoverConfig, s: &FailoverState) -> Vec<NodeRow> {
    s.actor_states
        .iter()
        .enumerate()
        .map(|(i, a)| match &**a {
            MemberState::Node(n) => {
                let log: Vec<String> = n.log.iter().map(entry_text).collect();
                let mut detail = vec![
                    format!("epoch {}", n.epoch),
                    format!("log [{}]", log.join(", ")),
                ];
                match &n.pending {
                    Some(Pending::Write { entry, .. }) => {
                        detail.push(format!("proposing {}", entry_text(entry)))
                    }
                    Some(Pending::Read { op, .. }) => {
                        detail.push(format!("confirming read op {op}"))
                    }
                    None => {}
                }
                NodeRow {
                    node: node(cfg, Id::from(i)),
                    role: n.role.name().into(),
                    version: n.version(),
                    data: format!("{:?}", n.data.entries),
                    prepared: None,
                    crashed: s.crashed[i],
                    saved_version: s.actor_storages[i].as_ref().map(|st| st.log.len() as u64),
                    detail: detail.join(", "),
                }
            }
            MemberState::Client(c) => NodeRow {
                node: "client".into(),
                role: "client".into(),
                version: c.next as u64,
                data: format!("{} of {} operations answered", c.next, cfg.script.len()),
                prepared: None,
                crashed: s.crashed[i],
                saved_version: None,
                detail: format!("asking {}", node(cfg, c.target)),
            },
        })
        .collect()
}

/// `--replay PATH`: prints the trace of a path of action indices on `cfg` exactly as given,
/// and every property at its last state.
fn replay(cfg: FailoverConfig, encoded: &str, json: bool) -> anyhow::Result<i32> {
    let model: FailoverModel = cfg.clone().into_model();
    let path = runner::replay_path(&model, encoded, &cfg)?;
    let state = path.last_state().clone();
    let cx = counterexample_of(1, "replay", &cfg, path, encoded.trim());
    crate::report::replay(NAME, &model, cfg.to_string(), &cx, &state, json)
}
