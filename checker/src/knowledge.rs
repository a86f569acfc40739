//! Protocol 3, knowledge sync: builds the config from the options, runs the model's checks,
//! and tells counterexamples in words. No protocol logic and no property lives here; the
//! model owns both.

use crate::cli::{KnowledgeArgs, SearchArgs};

use crate::protocol::{MutantInfo, PropertyInfo, Protocol};
use crate::report::{
    Counterexample, Counts, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Explored, Kind, NodeRow,
    PropertyRow, Report, SCHEMA, Verdict, verdict,
};
use crate::runner::{self, Settings, shortest_prefix};
use crate::suite::SuiteRun;
use anyhow::bail;
use replicore_model::knowledge::model::{
    KnowledgeModel, KnowledgeState, ModelChange, STORAGE_LOST, props, representative,
};
use replicore_model::knowledge::suite;
use replicore_model::knowledge::{
    Applied, KnowledgeConfig, Mutant, ReplicaData, Scenario, SyncMsg, Timer, incarnation_of,
    maker_name, session_name,
};
use replicore_model::suite::Tier;
use stateright::actor::{ActorModelAction, Id};
use stateright::{Expectation, Model, Path};

/// The protocol's command-line name.
pub const NAME: &str = "knowledge-sync";

/// Protocol 3 for `list`.
pub struct KnowledgeSync;

impl Protocol for KnowledgeSync {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "protocol 3: multi-master replicas sync pairwise by knowledge (version vectors with exceptions), with conflict detection, filters and recovery"
    }

    fn properties(&self) -> Vec<PropertyInfo> {
        let mut out: Vec<PropertyInfo> = Vec::new();
        let cancel = KnowledgeConfig {
            cancel: true,
            ..KnowledgeConfig::default()
        };
        let configs = Scenario::ALL
            .iter()
            .map(|s| KnowledgeConfig::scenario(*s))
            .chain([
                cancel,
                KnowledgeConfig {
                    disk_faults: 1,
                    ..KnowledgeConfig::default()
                },
            ]);
        for cfg in configs {
            for p in cfg.into_model().properties() {
                if out.iter().any(|o| o.name == p.name) {
                    continue;
                }
                let (kind, when) = match p.expectation {
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
        props::REACH_CONFLICT => "reachability, scenario conflict",
        props::REACH_FILTERED => "reachability, scenario filtered",
        props::REACH_RECOVERY => "reachability, scenario recovery",
        props::REACH_CANCEL => "reachability, --cancel",
        props::REACH_CONVERGED => "reachability, scenarios without a filter",
        props::REACH_RECREATED => "reachability, --disk-faults, scenarios without a filter",
        _ => "reachability",
    }
}

/// Builds the config from the options: an absent option keeps the scenario's value.
pub fn config(args: &KnowledgeArgs) -> anyhow::Result<KnowledgeConfig> {
    let mut cfg = KnowledgeConfig::scenario(args.scenario.unwrap_or(Scenario::Conflict));
    if let Some(p) = args.policy {
        cfg.policy = p;
    }
    if let Some(n) = args.sessions {
        cfg.sessions = n;
    }
    if let Some(lossy) = args.network {
        cfg.lossy = lossy.0;
    }
    if let Some(k) = args.crashes {
        cfg.max_crashes = usize::from(k);
    }
    if let Some(k) = args.disk_faults {
        cfg.disk_faults = usize::from(k);
    }
    cfg.two_way |= args.two_way;
    cfg.advertise |= args.advertise;
    cfg.cancel |= args.cancel;
    cfg.mutant = args.mutant;
    if cfg.disk_faults > 0 && cfg.max_crashes == 0 {
        bail!(
            "--disk-faults {} needs --crashes 1 or more: a store is lost while its replica is down",
            cfg.disk_faults
        );
    }
    if cfg.max_crashes > cfg.replicas() {
        bail!(
            "--crashes {} is more than the {} replicas",
            cfg.max_crashes,
            cfg.replicas()
        );
    }
    Ok(cfg)
}

/// The options that rebuild `cfg` exactly.
pub fn config_args(cfg: &KnowledgeConfig) -> String {
    let mut s = format!(
        "--scenario {} --policy {} --sessions {} --network {}duplicating --crashes {}",
        cfg.scenario.name(),
        cfg.policy.name(),
        cfg.sessions,
        if cfg.lossy { "lossy," } else { "" },
        cfg.max_crashes,
    );
    let base = KnowledgeConfig::scenario(cfg.scenario);
    for (on, flag) in [
        (cfg.two_way && !base.two_way, " --two-way"),
        (cfg.advertise, " --advertise"),
        (cfg.cancel, " --cancel"),
    ] {
        if on {
            s.push_str(flag);
        }
    }
    if cfg.disk_faults > 0 {
        s.push_str(&format!(" --disk-faults {}", cfg.disk_faults));
    }
    if let Some(m) = cfg.mutant {
        s.push_str(&format!(" --mutant {}", m.name()));
    }
    s
}

/// The command line that checks `cfg` (a mutant's refuting config, for the report and `list`).
fn refuted_by(cfg: &KnowledgeConfig) -> String {
    format!("replicore-check {NAME} {}", config_args(cfg))
}

fn config_fields(cfg: &KnowledgeConfig) -> serde_json::Value {
    serde_json::json!({
        "scenario": cfg.scenario.name(),
        "replicas": cfg.replicas(),
        "policy": cfg.policy.name(),
        "sessions": cfg.sessions,
        "lossy": cfg.lossy,
        "crashes": cfg.max_crashes,
        "disk_faults": cfg.disk_faults,
        "two_way": cfg.two_way,
        "advertise": cfg.advertise,
        "cancel": cfg.cancel,
        "mutant": cfg.mutant.map(Mutant::name),
    })
}

/// Runs `replicore-check knowledge-sync` and returns the exit code.
pub fn main(args: &KnowledgeArgs, search: &SearchArgs) -> anyhow::Result<i32> {
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
pub fn run(cfg: &KnowledgeConfig, search: &SearchArgs) -> anyhow::Result<Report> {
    let settings = crate::runner::settings(search)?;
    let report = check(cfg, &settings, search.no_reduction).with_ids(props::IDS);
    let report = match cfg.mutant {
        Some(m) => report.expect_mutant(m.name(), m.breaks().0, refuted_by(&m.breaks().1)),
        None => report,
    };
    Ok(report)
}

/// The full check of `cfg`.
pub fn check(cfg: &KnowledgeConfig, settings: &Settings, no_reduction: bool) -> Report {
    let (explored, reason) = if no_reduction || !cfg.lossy {
        (cfg.clone(), "explored as given".to_string())
    } else {
        (
            cfg.safety_equivalent(),
            "safety and reachability are decided exactly on the loss-free space: on a duplicating network loss cannot change them (KnowledgeConfig::safety_equivalent)".to_string(),
        )
    };
    let model = explored.clone().into_model();
    let outcome = runner::run(model, settings, Some(representative));
    let model_for_trim = explored.clone().into_model();
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
            let (path, encoded) = match model_for_trim
                .properties()
                .into_iter()
                .find(|p| p.name == f.name && p.expectation == Expectation::Always)
            {
                Some(p) => shortest_prefix(&model_for_trim, path, |s| {
                    !(p.condition)(&model_for_trim, s)
                })
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
        liveness_graph: None,
        counterexamples,
        mutant: None,
        exit_code,
    }
}

type Action = ActorModelAction<SyncMsg<u8, u8>, Timer, ()>;

fn counterexample_of(
    number: usize,
    property: &str,
    cfg: &KnowledgeConfig,
    path: Path<KnowledgeState, Action>,
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
    format!("replica {}", usize::from(id))
}

fn step_text(action: &Action) -> String {
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
                Timer::Edit => "makes its next edit".to_string(),
                Timer::Pull(p) => format!("pull timer fires (source replica {p})"),
                Timer::Cancel => "cancels its sync".to_string(),
                Timer::Purge => "purge timer fires".to_string(),
            };
            format!("{} {what}", node(*id))
        }
        ActorModelAction::Crash(id) => format!("{} crashes", node(*id)),
        ActorModelAction::Recover(id) => format!("{} restarts from its saved data", node(*id)),
        ActorModelAction::SelectRandom { actor, key, .. } if key == STORAGE_LOST => format!(
            "{} loses its store and is created again, as a new incarnation",
            node(*actor)
        ),
        ActorModelAction::SelectRandom { actor, .. } => format!("{} picks", node(*actor)),
    }
}

fn change_text(c: &ModelChange) -> String {
    let value = c
        .value
        .map_or("deleted".to_string(), |v| format!("{}={v}", c.key));
    let value = if c.value.is_none() {
        format!("{} {value}", c.key)
    } else {
        value
    };
    format!("{} {value} made with {}", c.id, c.made_with)
}

/// A message in a trace.
pub fn msg_text(msg: &SyncMsg<u8, u8>) -> String {
    match msg {
        SyncMsg::RequestChanges {
            session,
            knowledge,
            filter,
            recovery,
            two_way,
            ..
        } => {
            let session = session_name(*session);
            let mut s = format!("RequestChanges#{session}{{knowledge {knowledge}");
            if let Some(f) = filter {
                s.push_str(&format!(", filter {:?}", f.keys));
            }
            if *recovery {
                s.push_str(", full enumeration");
            }
            if *two_way {
                s.push_str(", two-way");
            }
            s + "}"
        }
        SyncMsg::ConveyChanges {
            session,
            source,
            seq,
            change,
            minimum,
        } => {
            let session = session_name(*session);
            let mut s = format!(
                "ConveyChanges#{session}.{seq}{}{{{}",
                from_text(*source),
                change_text(change)
            );
            if let Some(m) = minimum {
                s.push_str(&format!(", minimum {m}"));
            }
            s + "}"
        }
        SyncMsg::CompleteBundle {
            session,
            source,
            count,
            learned,
            filtered_learned,
            forgotten,
        } => {
            let session = session_name(*session);
            let mut s = format!(
                "CompleteBundle#{session}{}{{count {count}, learned {learned}",
                from_text(*source)
            );
            if let Some(f) = filtered_learned {
                s.push_str(&format!(
                    ", learned for {:?}: {}",
                    f.filter.keys, f.knowledge
                ));
            }
            if !forgotten.is_empty() {
                s.push_str(&format!(", forgotten {forgotten}"));
            }
            s + "}"
        }
        SyncMsg::AdvertiseChanges { knowledge } => format!("AdvertiseChanges{{{knowledge}}}"),
        SyncMsg::AcknowledgeChange {
            session,
            id,
            outcome,
        } => {
            let what = match outcome {
                Applied::Applied { replaced: None } => "applied".to_string(),
                Applied::Applied { replaced: Some(r) } => format!("applied over {r}"),
                Applied::Obsolete { by } => format!("obsolete, superseded by {}", by.id),
                Applied::Conflict { local, resolution } => {
                    format!("CONFLICT with {}, {}", local.id, resolution.name())
                }
            };
            format!(
                "AcknowledgeChange#{}{{{id} {what}}}",
                session_name(*session)
            )
        }
        SyncMsg::CancelChangeFlow { session } => {
            format!("CancelChangeFlow#{}", session_name(*session))
        }
        SyncMsg::ConveyKnowledge { session, knowledge } => {
            format!("ConveyKnowledge#{}{{{knowledge}}}", session_name(*session))
        }
    }
}

/// Which incarnation of the source sent a bundle's message, when it is not the first.
fn from_text(source: u64) -> String {
    if incarnation_of(source) == 0 {
        String::new()
    } else {
        format!(" from {}", maker_name(source))
    }
}

fn data_text(d: &ReplicaData<u8, u8>) -> String {
    let parts: Vec<String> = d
        .items
        .values()
        .map(|c| match c.value {
            Some(v) => format!("{}:{v}@{}", c.key, c.id),
            None => format!("{}:deleted@{}", c.key, c.id),
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn nodes(s: &KnowledgeState) -> Vec<NodeRow> {
    s.actor_states
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let d = &a.data;
            let mut detail = vec![format!("knowledge {}", d.knowledge)];
            if !d.forgotten.is_empty() {
                detail.push(format!("forgotten {}", d.forgotten));
            }
            for f in &d.filtered {
                detail.push(format!("knows for {:?}: {}", f.filter.keys, f.knowledge));
            }
            if !d.conflicts.is_empty() {
                let kept: Vec<String> = d.conflicts.iter().map(change_text).collect();
                detail.push(format!("kept conflicts [{}]", kept.join("; ")));
            }
            if let Some(p) = &a.pull {
                detail.push(format!(
                    "pulling session {} from replica {} ({} applied{})",
                    p.session,
                    p.source,
                    p.applied.len(),
                    p.complete
                        .as_ref()
                        .map_or(String::new(), |b| format!(" of {}", b.count))
                ));
            }
            NodeRow {
                node: node(Id::from(i)),
                role: "replica".into(),
                version: d.counter,
                data: data_text(d),
                prepared: None,
                crashed: s.crashed.get(i).copied().unwrap_or(false),
                saved_version: s
                    .actor_storages
                    .get(i)
                    .and_then(Option::as_ref)
                    .map(|st| st.counter),
                detail: detail.join(", "),
            }
        })
        .collect()
}

/// `--replay PATH`: prints the trace of a path of action indices on `cfg` exactly as given,
/// and every property at its last state.
fn replay(cfg: KnowledgeConfig, encoded: &str, json: bool) -> anyhow::Result<i32> {
    let model: KnowledgeModel = cfg.clone().into_model();
    let path = runner::replay_path(&model, encoded, &cfg)?;
    let state = path.last_state().clone();
    let cx = counterexample_of(1, "replay", &cfg, path, encoded.trim());
    crate::report::replay(NAME, &model, cfg.to_string(), &cx, &state, json)
}
