//! The exit codes of `replicore`, defined once: `main` maps every error to one of them, and
//! `docs/cli.md` documents them for scripts.

use replicore_runtime::failover::FailoverClientError;
use replicore_runtime::knowledge::net::SyncError;
use replicore_runtime::master_slave::client::ClientError;
use replicore_runtime::master_slave::node::UpdateError;
use replicore_runtime::stage_sync::StageError;
use std::sync::atomic::{AtomicBool, Ordering};

/// The command did what it was asked: an update committed, a read found its key, every node
/// answered.
pub const OK: u8 = 0;
/// Any failure no other code names: a bad cluster file, a store that does not open, an
/// inconsistent cluster, a node that stopped with an error.
pub const FAILED: u8 = 1;
/// The command line is wrong (clap's own code for usage errors), or a value given on it is
/// refused (an empty key, a weak cluster key).
pub const USAGE: u8 = 2;
/// The update is definitely aborted: it never becomes visible (refused, timed out, rolled
/// back, or undecided when the master restarted).
pub const ABORTED: u8 = 3;
/// The update was sent but no outcome came in time: it may commit or abort later.
pub const UNKNOWN: u8 = 4;
/// Nothing was sent, or nothing could be read: the node is unreachable, refused the
/// connection, or closed it before the request left. An update that exits 5 had no effect.
pub const NOT_SENT: u8 = 5;
/// The key (or the request to roll back) is not there.
pub const NOT_FOUND: u8 = 6;
/// `status`: at least one node did not answer (the others did and are consistent).
pub const DEGRADED: u8 = 7;

/// A failure with its exit code chosen where it is raised.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    /// The exit code.
    pub code: u8,
    /// The one-line cause.
    pub message: String,
}

/// A failure that exits `code`.
pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// Set once a command has printed its own JSON object for a failure, so that `main` does
/// not print a second one.
static JSON_PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints one JSON object as a line on stdout; a failing command calls it before it
/// returns its error.
pub fn print_json(value: &serde_json::Value) {
    JSON_PRINTED.store(true, Ordering::Relaxed);
    println!("{value}");
}

/// Whether the command printed its JSON object already.
pub fn json_printed() -> bool {
    JSON_PRINTED.load(Ordering::Relaxed)
}

/// The word a JSON object's `outcome` field uses for `code`.
pub fn outcome(code: u8) -> &'static str {
    match code {
        OK => "ok",
        USAGE => "usage",
        ABORTED => "aborted",
        UNKNOWN => "unknown",
        NOT_SENT => "not_sent",
        NOT_FOUND => "not_found",
        DEGRADED => "degraded",
        _ => "failed",
    }
}

/// The exit code of `e`: the first cause in its chain that names one.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if let Some(u) = cause.downcast_ref::<UpdateError>() {
            return update_code(u);
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return client_code(c);
        }
        if let Some(f) = cause.downcast_ref::<FailoverClientError>() {
            return match f {
                FailoverClientError::Transport(_) | FailoverClientError::NotSent { .. } => NOT_SENT,
                // The request may have reached a server that applied it.
                FailoverClientError::NoAnswer { .. }
                | FailoverClientError::Io { .. }
                | FailoverClientError::Closed { .. } => UNKNOWN,
                FailoverClientError::Codec(_) => FAILED,
            };
        }
        if let Some(s) = cause.downcast_ref::<SyncError>() {
            return sync_code(s);
        }
        if let Some(k) = cause.downcast_ref::<crate::knowledge::KnowledgeCliError>() {
            return match k {
                crate::knowledge::KnowledgeCliError::NoCluster => USAGE,
                crate::knowledge::KnowledgeCliError::Sync(s) => sync_code(s),
                _ => FAILED,
            };
        }
        if let Some(StageError::Transport(_)) = cause.downcast_ref::<StageError>() {
            return NOT_SENT;
        }
        if cause
            .downcast_ref::<replicore_runtime::runtime::transport::TransportError>()
            .is_some()
        {
            return NOT_SENT;
        }
    }
    FAILED
}

/// The exit code of a knowledge sync's failure: nothing was exchanged when it could not
/// connect.
fn sync_code(s: &SyncError) -> u8 {
    match s {
        SyncError::Transport(_) => NOT_SENT,
        _ => FAILED,
    }
}

/// The exit code of a protocol-1 client's failure.
pub fn client_code(c: &ClientError) -> u8 {
    match c {
        ClientError::Update(u) => update_code(u),
        // Connecting, authenticating, or a connection lost before the request left.
        ClientError::Transport(_)
        | ClientError::Io { .. }
        | ClientError::Closed { .. }
        | ClientError::NotSent { .. }
        // Refused before sending: over the frame limit.
        | ClientError::TooLarge { .. } => NOT_SENT,
        ClientError::NotReceived { .. } | ClientError::Forgotten { .. } => NOT_FOUND,
        ClientError::Codec(_) | ClientError::Unsupported { .. } => FAILED,
    }
}

fn update_code(u: &UpdateError) -> u8 {
    match u {
        UpdateError::Refused { .. }
        | UpdateError::TimedOut { .. }
        | UpdateError::RolledBack { .. }
        | UpdateError::MasterRestarted { .. } => ABORTED,
        UpdateError::NoAnswer(_) => UNKNOWN,
        UpdateError::NotMaster | UpdateError::Stopped => NOT_SENT,
    }
}
