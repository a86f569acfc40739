//! Protocol 1 in words: the names of nodes, messages, data and steps that the checker's
//! counterexamples and the Stateright Explorer both print (`Prepare{v2→v3 [1=2]}`,
//! `slave 1 receives Commit{v3} from master: now at v3`).

use super::{MasterSlaveAction as Action, MasterSlaveState, StorageFault};
use crate::master_slave::{
    Beat, ClientMsg, Decision, MasterSlaveConfig, Mode, Msg, NodeState, Outcome, Saved, ServiceMsg,
    Timer,
};
use crate::store::{KvDelta, KvOp, ModelKv};
use stateright::actor::{ActorModelAction, Id};

/// The name of actor `id` in a trace.
pub fn node_name(cfg: &MasterSlaveConfig, id: Id) -> String {
    let i = usize::from(id);
    if i == 0 {
        "master".into()
    } else if i > cfg.slaves && cfg.clients == 1 {
        "client".into()
    } else if i > cfg.slaves {
        format!("client {}", i - cfg.slaves)
    } else {
        format!("slave {i}")
    }
}

/// Step `action` from `before` to `after` in words, with what it changed at the node that
/// took it: `slave 1 receives Commit{v3} from master: now at v3`.
pub fn step_text(
    cfg: &MasterSlaveConfig,
    before: &MasterSlaveState,
    action: &Action,
    after: &MasterSlaveState,
) -> String {
    let (text, actor) = text(cfg, Some(before), action);
    match actor.and_then(|id| effect(before, after, usize::from(id))) {
        Some(effect) => format!("{text}: {effect}"),
        None => text,
    }
}

/// Action `action` in words, without a state: what the Explorer lists as a state's next
/// steps (`slave 1 receives Commit{v3} from master`, `slave 2 restarts`).
pub fn action_text(cfg: &MasterSlaveConfig, action: &Action) -> String {
    text(cfg, None, action).0
}

/// `action` in words, a restart telling what it loads when `before` is known; and the node
/// whose state the step changes, if one does.
fn text(
    cfg: &MasterSlaveConfig,
    before: Option<&MasterSlaveState>,
    action: &Action,
) -> (String, Option<Id>) {
    let node = |id: Id| node_name(cfg, id);
    match action {
        ActorModelAction::Deliver { src, dst, msg } => (
            format!(
                "{} receives {} from {}",
                node(*dst),
                msg_text(msg),
                node(*src)
            ),
            Some(*dst),
        ),
        ActorModelAction::Drop(env) => (
            format!(
                "network drops {} from {} to {}",
                msg_text(&env.msg),
                node(env.src),
                node(env.dst)
            ),
            None,
        ),
        ActorModelAction::Timeout(id, timer) => {
            let what = match timer {
                Timer::Heartbeat => "heartbeat",
                Timer::Decision => "decision (two-phase timeout)",
                Timer::Retry => "retry",
            };
            (format!("{} {what} timer fires", node(*id)), Some(*id))
        }
        ActorModelAction::Crash(id) => (format!("{} crashes", node(*id)), None),
        ActorModelAction::Recover(id) if before.is_none() => {
            (format!("{} restarts", node(*id)), Some(*id))
        }
        ActorModelAction::Recover(id) => {
            let saved = match before
                .and_then(|b| b.actor_storages.get(usize::from(*id)))
                .and_then(Option::as_ref)
            {
                Some(Saved::Slave(s)) => match &s.user.prepared {
                    Some(p) => format!("saved v{} (prepared v{})", s.user.version, p.new),
                    None => format!("saved v{}", s.user.version),
                },
                Some(Saved::Master(m)) => match &m.pending {
                    Some(p) => format!("saved v{} (pending v{})", m.user.version, p.step.new),
                    None => format!("saved v{}", m.user.version),
                },
                Some(Saved::MasterLost) => "its store lost, to rebuild from the slaves".into(),
                None => "nothing saved".into(),
            };
            (format!("{} restarts with {saved}", node(*id)), Some(*id))
        }
        ActorModelAction::SelectRandom { actor, .. }
            if let Some((_, fault)) = StorageFault::of(action) =>
        {
            (
                format!("{}: {} while down", node(*actor), fault.name()),
                None,
            )
        }
        ActorModelAction::SelectRandom { actor, key, random } => (
            format!("{} picks {random:?} for {key}", node(*actor)),
            Some(*actor),
        ),
    }
}

/// What changed at node `i` that a reader of a trace cares about.
pub fn effect(before: &MasterSlaveState, after: &MasterSlaveState, i: usize) -> Option<String> {
    let summary = |s: &MasterSlaveState| -> (u64, Option<u64>) {
        match s.actor_states.get(i).map(|a| &**a) {
            Some(NodeState::Master(m)) => (m.user.version, m.pending.as_ref().map(|p| p.step.new)),
            Some(NodeState::Slave(sl)) => {
                (sl.user.version, sl.user.prepared.as_ref().map(|p| p.new))
            }
            Some(NodeState::Client(c)) => (c.next, None),
            None => (0, None),
        }
    };
    let is_client = matches!(
        after.actor_states.get(i).map(|a| &**a),
        Some(NodeState::Client(_))
    );
    let (v0, p0) = summary(before);
    let (v1, p1) = summary(after);
    let mut parts = Vec::new();
    if v0 != v1 {
        parts.push(if is_client {
            format!("now on request {v1}")
        } else {
            format!("now at v{v1}")
        });
    }
    if p0 != p1 {
        parts.push(match p1 {
            Some(p) => format!("prepared v{p}"),
            None => "prepared cleared".into(),
        });
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A message in a trace: `Prepare{v2→v3}`, `Heartbeat{v3, commit v3}`, `Update#1{put 1=2, 2p}`.
pub fn msg_text(msg: &Msg<ModelKv>) -> String {
    match msg {
        Msg::Service(m) => match m {
            ServiceMsg::Announce { prior, new, delta } => match delta {
                Some(d) => format!("Announce{{v{prior}→v{new} {}}}", delta_text(d)),
                None => format!("Announce{{v{prior}→v{new}, no delta}}"),
            },
            ServiceMsg::DeltaRequest { from } => format!("DeltaRequest{{from v{from}}}"),
            ServiceMsg::Delta { from, to, delta } => {
                format!("Delta{{v{from}→v{to} {}}}", delta_text(delta))
            }
            ServiceMsg::Snapshot { from, to, data } => {
                format!("Snapshot{{v{to} {}, asked from v{from}}}", data_text(data))
            }
            ServiceMsg::Prepare { prior, new, delta } => {
                format!("Prepare{{v{prior}→v{new} {}}}", delta_text(delta))
            }
            ServiceMsg::Prepared { version } => format!("Prepared{{v{version}}}"),
            ServiceMsg::Refused { version } => format!("Refused{{v{version}}}"),
            ServiceMsg::Commit { version } => format!("Commit{{v{version}}}"),
            ServiceMsg::Abort { version } => format!("Abort{{v{version}}}"),
            ServiceMsg::Heartbeat(b) => format!("Heartbeat{{{}}}", beat_text(b)),
            ServiceMsg::HeartbeatAck(b) => format!("HeartbeatAck{{{}}}", beat_text(b)),
            ServiceMsg::Recover => "Recover".into(),
            ServiceMsg::Report {
                version,
                data,
                seen,
            } => format!("Report{{v{version} {}, seen v{seen}}}", data_text(data)),
        },
        Msg::Client(m) => match m {
            ClientMsg::Update { req, op, mode } => {
                let mode = match mode {
                    Mode::OnePhase => "1p",
                    Mode::TwoPhase { .. } => "2p",
                };
                format!("Update#{req}{{{}, {mode}}}", op_text(op))
            }
            ClientMsg::Rollback { req } => format!("Rollback#{req}"),
            ClientMsg::Committed { req, version } => format!("Committed#{req}{{v{version}}}"),
            ClientMsg::Aborted {
                req,
                version,
                reason,
            } => format!("Aborted#{req}{{v{version}, {reason:?}}}"),
        },
    }
}

/// A heartbeat's content: `v3, commit v3`.
pub fn beat_text(b: &Beat) -> String {
    match b.decision {
        Some(Decision { version, outcome }) => {
            let outcome = match outcome {
                Outcome::Commit => "commit",
                Outcome::Abort => "abort",
            };
            format!("v{}, {outcome} v{version}", b.version)
        }
        None => format!("v{}", b.version),
    }
}

/// A client operation: `put 1=2`, `delete 1`.
pub fn op_text(op: &KvOp<u8, u8>) -> String {
    match op {
        KvOp::Put(k, v) => format!("put {k}={v}"),
        KvOp::Delete(k) => format!("delete {k}"),
    }
}

/// A delta: `[1=2 2=∅]` (∅ for a removed key).
pub fn delta_text(d: &KvDelta<u8, u8>) -> String {
    let parts: Vec<String> = d
        .changes
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("{k}=∅"),
        })
        .collect();
    format!("[{}]", parts.join(" "))
}

/// A store's data: `{1:2, 3:4}`.
pub fn data_text(d: &ModelKv) -> String {
    let parts: Vec<String> = d.entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use crate::master_slave::MasterSlaveConfig;
    use stateright::Model;

    /// The model's own formatting (what the Explorer shows) speaks the trace's words for
    /// every action of the first few levels of the default config's space.
    #[test]
    fn the_explorer_words_are_the_traces_words() {
        let model = MasterSlaveConfig::default().into_model();
        let mut level = model.init_states();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut next_level = Vec::new();
            for s in &level {
                let mut actions = Vec::new();
                model.actions(s, &mut actions);
                for a in actions {
                    let listed = model.format_action(&a);
                    assert!(!listed.contains("Id("), "raw debug: {listed}");
                    let Some(step) = model.format_step(s, a.clone()) else {
                        continue;
                    };
                    let next = model.next_state(s, a.clone()).expect("a step");
                    assert_eq!(step, super::step_text(&model.cfg, s, &a, &next));
                    assert!(step.starts_with(&listed), "{step} / {listed}");
                    seen.push(step);
                    next_level.push(next);
                }
            }
            level = next_level;
        }
        assert!(
            seen.iter()
                .any(|s| s.starts_with("master receives Update#")),
            "{seen:?}"
        );
        assert!(seen.iter().any(|s| s.ends_with("crashes")), "{seen:?}");
    }
}
