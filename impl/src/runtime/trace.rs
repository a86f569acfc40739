//! Trace recording: what a node's actor saw and did, one JSON line per step, for trace
//! conformance ([`crate::master_slave::conformance`]).
//!
//! ```text
//!  <trace dir>/node-<id>.<incarnation>.jsonl
//!    {"trace":"replicore-trace-1","node":1,"incarnation":0,"meta":{...}}     header
//!    {"n":0,"input":{"Start":{"storage":null}},"out":[...]}                    on_start
//!    {"n":1,"input":{"Msg":{"src":0,"send":[0,0,3],"msg":{...}}},"out":[...]}   on_msg
//!    {"n":2,"input":{"Timer":{"timer":"Heartbeat"}},"out":[...]}               on_timeout
//! ```
//!
//! Each incarnation of a node (each start, fresh or after a crash) writes its own file; its
//! number is the count of files the node already has in the directory, so a merge orders
//! incarnations without any clock. Every `Send` a step emits gets a [`SendId`] (node,
//! incarnation, sequence number), carried on the wire in a [`crate::runtime::codec::Frame::Traced`]
//! frame, so the receiver's `Msg` input names the send that produced it and traces merge by
//! causality.
//!
//! A step's line is written (one `write` call, no user-space buffer) before any of its
//! commands is carried out, so a SIGKILL can never leave a message or a save without its
//! line: the page cache keeps what was written even when the process dies. A line cut short
//! by the kill is the last one of its file and describes a step that had not started.
//!
//! Tracing is a testing tool: a step's line holds its whole input and every command,
//! including the full saved storage, so its cost grows with the data set.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The format marker of a trace file's header line.
pub const FORMAT: &str = "replicore-trace-1";

/// A unique name for one `Send` command: the sending node, its incarnation, and the send's
/// number within that incarnation.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
pub struct SendId(pub u64, pub u32, pub u64);

/// The first line of a trace file.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Header {
    /// [`FORMAT`].
    pub trace: String,
    /// The node id.
    pub node: u64,
    /// The incarnation (0 for the first start of this node in this directory).
    pub incarnation: u32,
    /// What the reader needs to rebuild the actor (for protocol 1:
    /// `master_slave::conformance::NodeMeta`).
    pub meta: serde_json::Value,
}

/// What started a step.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub enum Input<M, T, S> {
    /// `on_start`, with the storage loaded from the data directory.
    Start {
        /// The loaded storage (`None`: a fresh directory).
        storage: Option<S>,
    },
    /// `on_msg`.
    Msg {
        /// The sender's id.
        src: u64,
        /// The send that produced it, when the sender traces (clients do not).
        send: Option<SendId>,
        /// The message.
        msg: M,
    },
    /// `on_timeout`.
    Timer {
        /// The timer that fired.
        timer: T,
    },
}

/// A command the step emitted, in order.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub enum Cmd<M, T, S> {
    /// `Send(dst, msg)`.
    Send {
        /// The destination id.
        dst: u64,
        /// This send's id.
        id: SendId,
        /// The message.
        msg: M,
    },
    /// `Save(storage)`.
    Save {
        /// The storage.
        storage: S,
    },
    /// `SetTimer(timer, _)`; durations are not recorded (the model ignores them).
    SetTimer {
        /// The timer.
        timer: T,
    },
    /// `CancelTimer(timer)`.
    CancelTimer {
        /// The timer.
        timer: T,
    },
}

/// One step: its number within the incarnation, its input and its commands.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Step<M, T, S> {
    /// The step's number within its incarnation, from 0 (the start).
    pub n: u64,
    /// What started it.
    pub input: Input<M, T, S>,
    /// What it emitted.
    pub out: Vec<Cmd<M, T, S>>,
}

/// A trace file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A file operation failed.
    #[error("trace file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("cannot encode a trace record: {0}")]
    Encode(serde_json::Error),
}

/// The file name of a node's incarnation.
pub fn file_name(node: u64, incarnation: u32) -> String {
    format!("node-{node}.{incarnation}.jsonl")
}

/// Parses a trace file name into (node, incarnation).
pub fn parse_file_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("node-")?.strip_suffix(".jsonl")?;
    let (node, inc) = rest.split_once('.')?;
    Some((node.parse().ok()?, inc.parse().ok()?))
}

/// The writer of one incarnation's trace.
#[derive(Debug)]
pub struct Tracer {
    file: File,
    path: PathBuf,
    node: u64,
    incarnation: u32,
    next_send: u64,
    next_step: u64,
}

impl Tracer {
    /// Creates the next incarnation's file of `node` in `dir` (created if missing) and
    /// writes its header.
    pub fn create(dir: &Path, node: u64, meta: serde_json::Value) -> Result<Self, TraceError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TraceError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut incarnation = 0;
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            if let Some((n, i)) = entry.file_name().to_str().and_then(parse_file_name)
                && n == node
            {
                incarnation = incarnation.max(i + 1);
            }
        }
        let path = dir.join(file_name(node, incarnation));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut tracer = Tracer {
            file,
            path,
            node,
            incarnation,
            next_send: 0,
            next_step: 0,
        };
        let header = Header {
            trace: FORMAT.to_string(),
            node,
            incarnation,
            meta,
        };
        tracer.write(&header)?;
        Ok(tracer)
    }

    /// This incarnation's number.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The node id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// A fresh id for the next `Send`.
    pub fn next_send_id(&mut self) -> SendId {
        let id = SendId(self.node, self.incarnation, self.next_send);
        self.next_send += 1;
        id
    }

    /// The sequence number the next [`Tracer::next_send_id`] will take.
    pub fn peek_send_seq(&self) -> u64 {
        self.next_send
    }

    /// The number of the next step.
    pub fn next_step(&mut self) -> u64 {
        let n = self.next_step;
        self.next_step += 1;
        n
    }

    /// Appends `record` as one line, in one `write` call.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), TraceError> {
        let mut line = serde_json::to_vec(record).map_err(TraceError::Encode)?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| TraceError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_number_the_files_of_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tracer::create(dir.path(), 2, serde_json::Value::Null).unwrap();
        let b = Tracer::create(dir.path(), 2, serde_json::Value::Null).unwrap();
        let other = Tracer::create(dir.path(), 3, serde_json::Value::Null).unwrap();
        assert_eq!(
            (a.incarnation(), b.incarnation(), other.incarnation()),
            (0, 1, 0)
        );
        assert_eq!(parse_file_name("node-2.1.jsonl"), Some((2, 1)));
        assert_eq!(parse_file_name("node-x.1.jsonl"), None);
        assert_eq!(parse_file_name("faults-2.1.json"), None);
    }

    #[test]
    fn send_ids_are_unique_per_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Tracer::create(dir.path(), 1, serde_json::Value::Null).unwrap();
        let mut b = Tracer::create(dir.path(), 1, serde_json::Value::Null).unwrap();
        let ids = [a.next_send_id(), a.next_send_id(), b.next_send_id()];
        assert_eq!(ids, [SendId(1, 0, 0), SendId(1, 0, 1), SendId(1, 1, 0)]);
    }
}
