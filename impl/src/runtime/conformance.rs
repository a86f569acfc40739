//! Trace conformance, the generic part: reading a run's traces ([`read_dir`]), and replaying
//! each node's steps through its own actor ([`replay`]). Protocol 1 replays the merged run
//! through its whole checked model instead (`crate::master_slave::conformance`), and so
//! checks its properties on every state too; the other protocols use [`replay`].
//!
//! ```text
//!  node-0.0.jsonl  node-0.1.jsonl  node-1.0.jsonl ...      (crate::runtime::trace)
//!        │               │               │
//!        └────────── per node, incarnations in order ───────────┐
//!                                                               ▼
//!   the node's actor (rebuilt from the header) ◀── each step, from the replayed state:
//!     start:   the storage loaded is the last durable save of the earlier incarnations
//!     message: a message from a traced node was sent, with this content, to this node
//!     timer:   armed in the replayed state
//!     always:  exactly the commands recorded (Sends, Saves, timers), in order
//! ```

use crate::runtime::trace::{FORMAT, Header, Input, SendId, Step, parse_file_name};
use serde::de::DeserializeOwned;
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// One incarnation's trace.
#[derive(Clone, Debug)]
pub struct Incarnation<M, T, S> {
    /// The header.
    pub header: Header,
    /// Its steps, in order.
    pub steps: Vec<Step<M, T, S>>,
    /// Whether its last line was cut short (the process was killed while writing it).
    pub torn_tail: bool,
}

/// Every node's incarnations, by node id.
pub type Nodes<M, T, S> = BTreeMap<u64, Vec<Incarnation<M, T, S>>>;

/// A trace that cannot be read, or a run that does not conform.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A trace file is malformed.
    #[error("{path}: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The traces are not a run this checker can replay.
    #[error("{0}")]
    Unsupported(String),
    /// A recorded step is not what the model does.
    #[error("{0}")]
    Diverged(Box<Divergence>),
    /// The run's states break a property of the model that relates nodes.
    #[error("the run breaks a property of the model: {0}")]
    Property(String),
}

/// The first step where the run and the model part.
#[derive(Debug)]
pub struct Divergence {
    /// Which step: "node N incarnation I step S".
    pub step: String,
    /// What the step was (its input).
    pub input: String,
    /// Why it does not conform.
    pub reason: String,
    /// The model's state of that node before the step.
    pub before: String,
    /// The model's state of that node after the step (or what the runtime recorded).
    pub after: String,
    /// The runtime's and the model's commands, when they differ.
    pub commands: Option<(String, String)>,
    /// How many steps conformed before it.
    pub steps_before: usize,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trace diverges from the model at {} (after {} conforming steps): {}",
            self.step, self.steps_before, self.reason
        )?;
        writeln!(f, "  input: {}", self.input)?;
        writeln!(f, "  model state before: {}", self.before)?;
        write!(f, "  model state after:  {}", self.after)?;
        if let Some((runtime, model)) = &self.commands {
            write!(
                f,
                "\n  runtime commands: {runtime}\n  model commands:   {model}"
            )?;
        }
        Ok(())
    }
}

/// Reads every `node-<id>.<incarnation>.jsonl` file of `dir`: node id → incarnations 0, 1,
/// ... in order, each checked (header, step numbers, one start first).
pub fn read_dir<M, T, S>(dir: &Path) -> Result<Nodes<M, T, S>, ConformanceError>
where
    M: DeserializeOwned,
    T: DeserializeOwned,
    S: DeserializeOwned,
{
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConformanceError::Io { path, source }
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if let Some(key) = entry.file_name().to_str().and_then(parse_file_name) {
            files.insert(key, entry.path());
        }
    }
    if files.is_empty() {
        return Err(ConformanceError::Unsupported(format!(
            "no trace files (node-<id>.<n>.jsonl) in {}",
            dir.display()
        )));
    }
    let mut nodes: Nodes<M, T, S> = BTreeMap::new();
    for ((node, inc), path) in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let incarnation = parse_file(&path, &text)?;
        let malformed = |detail: String| ConformanceError::Malformed {
            path: path.clone(),
            detail,
        };
        if incarnation.header.node != node || incarnation.header.incarnation != inc {
            return Err(malformed(
                "the header names another node or incarnation than the file name".into(),
            ));
        }
        let list = nodes.entry(node).or_default();
        if list.len() != inc as usize {
            return Err(malformed(format!(
                "incarnation {inc} of node {node} follows {} earlier ones",
                list.len()
            )));
        }
        list.push(incarnation);
    }
    Ok(nodes)
}

fn parse_file<M, T, S>(path: &Path, text: &str) -> Result<Incarnation<M, T, S>, ConformanceError>
where
    M: DeserializeOwned,
    T: DeserializeOwned,
    S: DeserializeOwned,
{
    let malformed = |detail: String| ConformanceError::Malformed {
        path: path.to_path_buf(),
        detail,
    };
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    let header: Header = match lines.next() {
        Some((_, line)) => serde_json::from_str(line)
            .map_err(|e| malformed(format!("line 1 is not a trace header: {e}")))?,
        None => return Err(malformed("empty trace file".into())),
    };
    if header.trace != FORMAT {
        return Err(malformed(format!(
            "format {:?}, expected {:?}",
            header.trace, FORMAT
        )));
    }
    let mut steps = Vec::new();
    let mut torn_tail = false;
    while let Some((i, line)) = lines.next() {
        match serde_json::from_str::<Step<M, T, S>>(line) {
            Ok(step) => {
                if step.n != steps.len() as u64 {
                    return Err(malformed(format!(
                        "line {}: step {} where {} was expected",
                        i + 1,
                        step.n,
                        steps.len()
                    )));
                }
                steps.push(step);
            }
            // A kill can cut the last line short; its step had not started.
            Err(_) if lines.peek().is_none() && !line.ends_with('\n') => torn_tail = true,
            Err(e) => return Err(malformed(format!("line {}: {e}", i + 1))),
        }
    }
    if steps
        .first()
        .is_some_and(|s| !matches!(s.input, Input::Start { .. }))
        || steps
            .iter()
            .skip(1)
            .any(|s| matches!(s.input, Input::Start { .. }))
    {
        return Err(malformed(
            "a start must be the first step and only it".into(),
        ));
    }
    Ok(Incarnation {
        header,
        steps,
        torn_tail,
    })
}

/// What a conforming per-node replay covered.
#[derive(Clone, Debug, Default, Eq, PartialEq, serde::Serialize)]
pub struct Replayed {
    /// Nodes replayed.
    pub nodes: usize,
    /// Recorded steps replayed (starts, messages, timers).
    pub steps: usize,
    /// Restarts (later incarnations).
    pub restarts: usize,
    /// Messages from traced nodes delivered, each matched with its send.
    pub deliveries: usize,
    /// Messages from untraced senders (clients, users, the application) delivered.
    pub inputs: usize,
    /// Timers fired.
    pub timeouts: usize,
    /// Restarts that loaded the save before the last one of the previous incarnation (the
    /// last step's save was cut by a kill; none of its messages was received).
    pub unsaved_steps: usize,
    /// How many of the model's properties the protocol's check evaluated on the run (0: the
    /// replay alone).
    pub properties: usize,
    /// Restarts that loaded nothing though an earlier incarnation had saved: the store was
    /// lost and the node created again, replayed as the model's storage fault where the
    /// protocol's model has it ([`replay_with`]); a divergence otherwise.
    pub storage_faults: usize,
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conforms: {} steps of {} nodes ({} deliveries matched with their sends, {} inputs, \
             {} timeouts, {} restarts, {} unsaved steps of killed nodes)",
            self.steps,
            self.nodes,
            self.deliveries,
            self.inputs,
            self.timeouts,
            self.restarts,
            self.unsaved_steps
        )?;
        if self.storage_faults > 0 {
            write!(f, "; {} stores lost and created again", self.storage_faults)?;
        }
        if self.properties > 0 {
            write!(f, "; {} of the model's properties hold", self.properties)?;
        }
        Ok(())
    }
}

/// One command, comparable, as the trace records it (a timer's duration is not recorded).
#[derive(Debug, PartialEq)]
enum Cmp<'a, M, T, S> {
    Send(u64, &'a M),
    Save(&'a S),
    SetTimer(&'a T),
    CancelTimer(&'a T),
}

fn recorded<M, T, S>(cmds: &[crate::runtime::trace::Cmd<M, T, S>]) -> Vec<Cmp<'_, M, T, S>> {
    use crate::runtime::trace::Cmd;
    cmds.iter()
        .map(|c| match c {
            Cmd::Send { dst, msg, .. } => Cmp::Send(*dst, msg),
            Cmd::Save { storage } => Cmp::Save(storage),
            Cmd::SetTimer { timer } => Cmp::SetTimer(timer),
            Cmd::CancelTimer { timer } => Cmp::CancelTimer(timer),
        })
        .collect()
}

fn replayed<A: Actor>(out: &Out<A>) -> Vec<Cmp<'_, A::Msg, A::Timer, A::Storage>> {
    out.iter()
        .filter_map(|c| match c {
            Command::Send(dst, m) => Some(Cmp::Send(usize::from(*dst) as u64, m)),
            Command::Save(s) => Some(Cmp::Save(s)),
            Command::SetTimer(t, _) => Some(Cmp::SetTimer(t)),
            Command::CancelTimer(t) => Some(Cmp::CancelTimer(t)),
            Command::ChooseRandom(..) => None,
        })
        .collect()
}

/// Replays every node's recorded steps through its actor (`actor_of(node, header)`), from
/// the replayed state, and requires exactly the recorded commands at every step; a message
/// from a traced node must have been sent, with that content, to this node; a timer must be
/// armed when it fires; a restart must load the last durable save. The first step that fails
/// is reported with the actor's state before and after it.
pub fn replay<A>(
    nodes: &Nodes<A::Msg, A::Timer, A::Storage>,
    actor_of: impl Fn(u64, &Header) -> Result<A, String>,
) -> Result<Replayed, ConformanceError>
where
    A: Actor,
    A::Msg: PartialEq,
    A::Storage: PartialEq,
{
    replay_checked(nodes, actor_of, |_, _| Ok(())).map(|(report, _)| report)
}

/// [`replay`], and `check(node, state)` on every state a node takes (after each of its
/// steps, restarts included): the protocol's properties of one node, or of a node's history
/// (the checker keeps what it needs between calls). The first state it refuses is reported
/// as a divergence, with the reason it gives. Returns each node's last state too, for the
/// properties that relate nodes.
pub fn replay_checked<A>(
    nodes: &Nodes<A::Msg, A::Timer, A::Storage>,
    actor_of: impl Fn(u64, &Header) -> Result<A, String>,
    check: impl FnMut(u64, &A::State) -> Result<(), String>,
) -> Result<(Replayed, BTreeMap<u64, A::State>), ConformanceError>
where
    A: Actor,
    A::Msg: PartialEq,
    A::Storage: PartialEq,
{
    replay_with(nodes, actor_of, check, false)
}

/// [`replay_checked`], and with `lost_stores` a restart that loaded nothing after an earlier
/// incarnation saved is replayed as the model's lost store (the node created again with
/// `--init`), for a protocol whose model has that fault (knowledge sync); it is counted in
/// [`Replayed::storage_faults`], and the node's later restarts load its new saves.
pub fn replay_with<A>(
    nodes: &Nodes<A::Msg, A::Timer, A::Storage>,
    actor_of: impl Fn(u64, &Header) -> Result<A, String>,
    mut check: impl FnMut(u64, &A::State) -> Result<(), String>,
    lost_stores: bool,
) -> Result<(Replayed, BTreeMap<u64, A::State>), ConformanceError>
where
    A: Actor,
    A::Msg: PartialEq,
    A::Storage: PartialEq,
{
    let mut last_states = BTreeMap::new();
    // Every traced send, by id: where it went and what it carried.
    let mut sent: HashMap<SendId, (u64, &A::Msg)> = HashMap::new();
    for inc in nodes.values().flatten() {
        for step in &inc.steps {
            for c in &step.out {
                if let crate::runtime::trace::Cmd::Send { dst, id, msg } = c {
                    sent.insert(*id, (*dst, msg));
                }
            }
        }
    }
    let mut report = Replayed {
        nodes: nodes.len(),
        ..Replayed::default()
    };
    for (node, incarnations) in nodes {
        let id = Id::from(*node as usize);
        // The saves of the earlier incarnations, latest last.
        let mut saves: Vec<&A::Storage> = Vec::new();
        for inc in incarnations {
            let actor = actor_of(*node, &inc.header).map_err(ConformanceError::Unsupported)?;
            let mut state: Option<A::State> = None;
            let mut armed: HashSet<A::Timer> = HashSet::new();
            for step in &inc.steps {
                let at = format!(
                    "node {node} incarnation {} step {}",
                    inc.header.incarnation, step.n
                );
                let diverged = |reason: String, before: String, after: String| {
                    ConformanceError::Diverged(Box::new(Divergence {
                        step: at.clone(),
                        input: clip(format!("{:?}", step.input)),
                        reason,
                        before,
                        after,
                        commands: None,
                        steps_before: report.steps,
                    }))
                };
                let before = state
                    .as_ref()
                    .map_or("-".to_string(), |s| clip(format!("{s:?}")));
                let mut out = Out::new();
                match &step.input {
                    Input::Start { storage } => {
                        let last = saves.last().copied();
                        let earlier = saves.len().checked_sub(2).map(|i| saves[i]);
                        match storage {
                            s if s.as_ref() == last => {}
                            Some(s) if Some(s) == earlier => report.unsaved_steps += 1,
                            None if lost_stores => {
                                report.storage_faults += 1;
                                saves.clear();
                            }
                            _ => {
                                return Err(diverged(
                                    "the storage loaded at start is not the last save".into(),
                                    clip(format!("{last:?}")),
                                    clip(format!("{storage:?}")),
                                ));
                            }
                        }
                        if inc.header.incarnation > 0 {
                            report.restarts += 1;
                        }
                        state = Some(actor.on_start(id, storage, &mut out));
                    }
                    Input::Msg { src, send, msg } => {
                        let Some(current) = state.take() else {
                            return Err(diverged(
                                "a message before the start".into(),
                                before,
                                "-".into(),
                            ));
                        };
                        match send {
                            Some(send) => {
                                if sent.get(send) != Some(&(*node, msg)) {
                                    return Err(diverged(
                                        format!(
                                            "no send {send:?} to node {node} carried this message"
                                        ),
                                        before,
                                        "-".into(),
                                    ));
                                }
                                report.deliveries += 1;
                            }
                            None => report.inputs += 1,
                        }
                        let mut cow = Cow::Owned(current);
                        actor.on_msg(id, &mut cow, Id::from(*src as usize), msg.clone(), &mut out);
                        state = Some(cow.into_owned());
                    }
                    Input::Timer { timer } => {
                        let Some(current) = state.take() else {
                            return Err(diverged(
                                "a timer before the start".into(),
                                before,
                                "-".into(),
                            ));
                        };
                        if !armed.remove(timer) {
                            return Err(diverged(
                                "a timer fired that the actor had not set".into(),
                                before,
                                "-".into(),
                            ));
                        }
                        report.timeouts += 1;
                        let mut cow = Cow::Owned(current);
                        actor.on_timeout(id, &mut cow, timer, &mut out);
                        state = Some(cow.into_owned());
                    }
                }
                let (runtime, model) = (recorded(&step.out), replayed(&out));
                if runtime != model {
                    let mut d = diverged(
                        "the runtime's commands are not the actor's".into(),
                        before,
                        state
                            .as_ref()
                            .map_or("-".to_string(), |s| clip(format!("{s:?}"))),
                    );
                    if let ConformanceError::Diverged(d) = &mut d {
                        d.commands =
                            Some((clip(format!("{runtime:?}")), clip(format!("{model:?}"))));
                    }
                    return Err(d);
                }
                if let Some(s) = &state
                    && let Err(why) = check(*node, s)
                {
                    return Err(diverged(
                        format!("a property fails: {why}"),
                        before,
                        clip(format!("{s:?}")),
                    ));
                }
                for c in &step.out {
                    match c {
                        crate::runtime::trace::Cmd::SetTimer { timer } => {
                            armed.insert(timer.clone());
                        }
                        crate::runtime::trace::Cmd::CancelTimer { timer } => {
                            armed.remove(timer);
                        }
                        crate::runtime::trace::Cmd::Save { storage } => saves.push(storage),
                        crate::runtime::trace::Cmd::Send { .. } => {}
                    }
                }
                report.steps += 1;
            }
            if let Some(s) = state {
                last_states.insert(*node, s);
            }
        }
    }
    Ok((report, last_states))
}

/// Cuts a long rendering to something a report can show.
pub fn clip(mut text: String) -> String {
    const MAX: usize = 4000;
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …");
    }
    text
}
