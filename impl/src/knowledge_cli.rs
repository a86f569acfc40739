//! The `replicore` subcommands of protocol 3 on a local replica: writes, and bundle files
//! carried between replicas (the removable medium of seed 004, claims 25 and 30). The binary
//! only wires them in.

use crate::knowledge::{LocalReplica, ReplicaError};
use clap::Subcommand;
use replicore_model::knowledge::{ConflictPolicy, ReplicaId};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Knowledge-sync commands on a replica's data directory.
#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Knowledge sync: set KEY to VALUE on a local replica (a new change of that replica).
    ReplicaPut {
        /// The replica's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The replica's id (unique in the sync community).
        #[arg(long)]
        replica: ReplicaId,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Knowledge sync: delete KEY on a local replica (a tombstone).
    ReplicaDelete {
        /// The replica's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The replica's id.
        #[arg(long)]
        replica: ReplicaId,
        /// The key.
        key: String,
    },
    /// Knowledge sync: print a local replica's items, knowledge and kept conflicts.
    ReplicaShow {
        /// The replica's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The replica's id.
        #[arg(long)]
        replica: ReplicaId,
    },
    /// Knowledge sync: write every item of a local replica to a bundle file.
    ExportBundle {
        /// The replica's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The replica's id.
        #[arg(long)]
        replica: ReplicaId,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// A full enumeration, accepted by a replica that missed forgotten deletions.
        #[arg(long)]
        full: bool,
    },
    /// Knowledge sync: apply a bundle file to a local replica (any order, any number of times).
    ImportBundle {
        /// The replica's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The replica's id.
        #[arg(long)]
        replica: ReplicaId,
        /// How to resolve a conflict: source-wins, destination-wins or keep-both.
        #[arg(long, default_value = "destination-wins", value_parser = parse_policy)]
        policy: ConflictPolicy,
        /// The bundle file.
        file: PathBuf,
    },
}

fn parse_policy(s: &str) -> Result<ConflictPolicy, String> {
    ConflictPolicy::from_name(s).ok_or_else(|| {
        format!("unknown policy '{s}' (expected source-wins, destination-wins or keep-both)")
    })
}

/// Runs one command and returns what to print.
pub fn run(cmd: KnowledgeCommand) -> Result<String, ReplicaError> {
    let open = |dir: &PathBuf, id| LocalReplica::open(dir, id, ConflictPolicy::default());
    match cmd {
        KnowledgeCommand::ReplicaPut {
            data_dir,
            replica,
            key,
            value,
        } => {
            let id = open(&data_dir, replica)?.write(&key, Some(&value))?;
            Ok(format!("{key} = {value} ({id})\n"))
        }
        KnowledgeCommand::ReplicaDelete {
            data_dir,
            replica,
            key,
        } => {
            let id = open(&data_dir, replica)?.write(&key, None)?;
            Ok(format!("{key} deleted ({id})\n"))
        }
        KnowledgeCommand::ReplicaShow { data_dir, replica } => {
            let r = open(&data_dir, replica)?;
            let d = r.data();
            let mut out = String::new();
            for (k, c) in &d.items {
                let _ = match &c.value {
                    Some(v) => writeln!(out, "{k} = {v} ({})", c.id),
                    None => writeln!(out, "{k} deleted ({})", c.id),
                };
            }
            for c in &d.conflicts {
                let _ = writeln!(out, "conflict kept: {} = {:?} ({})", c.key, c.value, c.id);
            }
            let _ = writeln!(out, "knowledge {}", d.knowledge);
            if !d.forgotten.is_empty() {
                let _ = writeln!(out, "forgotten {}", d.forgotten);
            }
            Ok(out)
        }
        KnowledgeCommand::ExportBundle {
            data_dir,
            replica,
            out,
            full,
        } => {
            let b = open(&data_dir, replica)?.export_bundle(&out, full)?;
            Ok(format!(
                "wrote {} change(s) of replica {replica} to {}\n",
                b.messages.len().saturating_sub(1),
                out.display()
            ))
        }
        KnowledgeCommand::ImportBundle {
            data_dir,
            replica,
            policy,
            file,
        } => {
            let mut r = LocalReplica::open(&data_dir, replica, policy)?;
            let rep = r.import_bundle(&file)?;
            Ok(format!(
                "{} change(s): {} applied, {} obsolete, {} conflict(s); knowledge {}\n",
                rep.changes,
                rep.applied,
                rep.obsolete,
                rep.conflicts,
                if rep.learned {
                    "learned"
                } else {
                    "not learned (incomplete bundle)"
                }
            ))
        }
    }
}
