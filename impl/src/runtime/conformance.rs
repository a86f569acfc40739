//! Trace conformance, the generic part: reading a run's traces ([`read_dir`]) and the errors
//! of a replay. Protocol 1 replays the merged run through its whole checked model
//! (`crate::master_slave::conformance`).

use crate::runtime::trace::{FORMAT, Header, Input, Step, parse_file_name};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
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
