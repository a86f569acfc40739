//! The `replicore` subcommands of protocol 3 on a local replica: writes, and bundle files
//! carried between replicas (the removable medium of seed 004, claims 25 and 30). The binary
//! only wires them in.

use clap::Subcommand;
use replicore_model::knowledge::{ConflictPolicy, ReplicaId};
use replicore_runtime::knowledge::net::{self, SyncError};
use replicore_runtime::knowledge::{LocalReplica, ReplicaError};
use replicore_runtime::runtime::config::TransportSettings;
use replicore_runtime::runtime::tls::Role;
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
        /// The key (not empty).
        key: String,
        /// The value (or give --value-file).
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from this file (UTF-8 text: this protocol's values are strings);
        /// `-` reads stdin.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        value_file: Option<PathBuf>,
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
    /// Knowledge sync: serve syncs of a local replica to peers over TCP (runs until killed).
    ReplicaServe {
        /// The replica's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The replica's id.
        #[arg(long)]
        replica: ReplicaId,
        /// The address to listen on (host:port).
        #[arg(long)]
        listen: String,
        /// How to resolve a conflict when a peer's two-way sync pulls into this replica.
        #[arg(long, default_value = "destination-wins", value_parser = parse_policy)]
        policy: ConflictPolicy,
    },
    /// Knowledge sync: pull from a serving replica (and, two-way, let it pull back).
    Sync {
        /// The replica's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The replica's id.
        #[arg(long)]
        replica: ReplicaId,
        /// The serving replica's address (host:port).
        #[arg(long)]
        peer: String,
        /// Two-way: the peer pulls this replica's changes too.
        #[arg(long)]
        two_way: bool,
        /// How to resolve a conflict.
        #[arg(long, default_value = "destination-wins", value_parser = parse_policy)]
        policy: ConflictPolicy,
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

/// `replicore knowledge-sync <verb>`: the replica commands (also at the top level, as
/// before) and `check-trace`, which only this form has (the top level's is protocol 1's).
#[derive(Debug, Subcommand)]
pub enum KnowledgeSyncCommand {
    #[command(flatten)]
    Replica(KnowledgeCommand),
    /// Knowledge sync: replay the traces in a directory through each replica's actor.
    CheckTrace {
        /// The directory the replicas recorded their traces in (`--trace-dir`).
        dir: PathBuf,
    },
}

/// Why a knowledge-sync command failed.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeCliError {
    /// The local replica or a bundle file.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The online sync.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A network command without the cluster's id and key.
    #[error(
        "no cluster id or key: give --cluster-id and --key-file (or REPLICORE_KEY), or --config"
    )]
    NoCluster,
    /// The traces do not conform.
    #[error(transparent)]
    Conformance(#[from] replicore_runtime::runtime::conformance::ConformanceError),
    /// The TLS setup could not be used (a certificate file).
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] replicore_runtime::runtime::tls::TlsError),
    /// The listener could not be bound or failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl KnowledgeCommand {
    /// Whether the command talks to other replicas (and needs the cluster id and key).
    pub fn needs_cluster(&self) -> bool {
        matches!(
            self,
            KnowledgeCommand::Sync { .. } | KnowledgeCommand::ReplicaServe { .. }
        )
    }
}

fn parse_policy(s: &str) -> Result<ConflictPolicy, String> {
    ConflictPolicy::from_name(s).ok_or_else(|| {
        format!("unknown policy '{s}' (expected source-wins, destination-wins or keep-both)")
    })
}

/// Opens a replica with the default conflict policy.
async fn open(
    dir: &std::path::Path,
    id: ReplicaId,
    init: bool,
    trace_dir: Option<&std::path::Path>,
) -> Result<LocalReplica, ReplicaError> {
    LocalReplica::open_traced(dir, id, ConflictPolicy::default(), init, trace_dir).await
}

/// Runs one command and returns what to print (one JSON object per line with `json`).
/// `cluster` is the cluster's id and key, for the commands that talk to other replicas;
/// `metrics_listen` the address of `replica-serve`'s metrics endpoint.
pub async fn run(
    cmd: KnowledgeCommand,
    cluster: Option<(u64, Vec<u8>, TransportSettings)>,
    init: bool,
    trace_dir: Option<PathBuf>,
    metrics_listen: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    match cmd {
        KnowledgeCommand::ReplicaServe {
            data_dir,
            replica,
            listen,
            policy,
        } => {
            let (cluster_id, key, transport) = cluster.ok_or(KnowledgeCliError::NoCluster)?;
            let security = transport.security(Role::Node(replica))?;
            let r =
                LocalReplica::open_traced(&data_dir, replica, policy, init, trace_dir.as_deref())
                    .await?;
            let listen_err = |source| KnowledgeCliError::Listen {
                addr: listen.clone(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(listen_err)?;
            eprintln!("replica {replica} serving syncs on {listen}");
            if let Some(addr) = metrics_listen {
                // Ready while it serves: the process ends when serving does.
                let name = format!("replica {replica}");
                let stop = tokio_util::sync::CancellationToken::new();
                crate::start_metrics(addr, &name, std::sync::Arc::new(|| true), stop).await?;
            }
            net::serve_secured(listener, r, cluster_id, key, security)
                .await
                .map_err(listen_err)?;
            Ok(String::new())
        }
        KnowledgeCommand::Sync {
            data_dir,
            replica,
            peer,
            two_way,
            policy,
        } => {
            let (cluster_id, key, transport) = cluster.ok_or(KnowledgeCliError::NoCluster)?;
            let security = transport.security(Role::Node(replica))?;
            let mut r =
                LocalReplica::open_traced(&data_dir, replica, policy, init, trace_dir.as_deref())
                    .await?;
            let rep =
                net::sync_with_secured(&mut r, &peer, cluster_id, &key, security, two_way).await?;
            Ok(if json {
                line(serde_json::json!({
                    "command": "sync", "replica": replica, "peer": peer,
                    "received": rep.received, "sent": rep.sent, "learned": rep.learned,
                }))
            } else {
                format!(
                    "synced with {peer}: {} change(s) received, {} sent\n",
                    rep.received, rep.sent
                )
            })
        }
        KnowledgeCommand::ReplicaPut {
            data_dir,
            replica,
            key,
            value,
            value_file,
        } => {
            crate::values::check_key(&key)?;
            let value = crate::values::read_text(value, value_file.as_deref())?;
            let id = open(&data_dir, replica, init, trace_dir.as_deref())
                .await?
                .write(&key, Some(&value))
                .await?;
            Ok(if json {
                line(serde_json::json!({
                    "command": "replica-put", "replica": replica, "key": key,
                    "value": value, "change": id.to_string(),
                }))
            } else {
                format!("{key} = {value} ({id})\n")
            })
        }
        KnowledgeCommand::ReplicaDelete {
            data_dir,
            replica,
            key,
        } => {
            crate::values::check_key(&key)?;
            let id = open(&data_dir, replica, init, trace_dir.as_deref())
                .await?
                .write(&key, None)
                .await?;
            Ok(if json {
                line(serde_json::json!({
                    "command": "replica-delete", "replica": replica, "key": key,
                    "change": id.to_string(),
                }))
            } else {
                format!("{key} deleted ({id})\n")
            })
        }
        KnowledgeCommand::ReplicaShow { data_dir, replica } => {
            let r = open(&data_dir, replica, init, trace_dir.as_deref()).await?;
            let d = r.data();
            let mut out = String::new();
            if json {
                for (k, c) in &d.items {
                    out.push_str(&line(serde_json::json!({
                        "command": "replica-show", "kind": "item", "key": k,
                        "value": c.value, "deleted": c.value.is_none(), "change": c.id.to_string(),
                    })));
                }
                for c in &d.conflicts {
                    out.push_str(&line(serde_json::json!({
                        "command": "replica-show", "kind": "conflict", "key": c.key,
                        "value": c.value, "deleted": c.value.is_none(), "change": c.id.to_string(),
                    })));
                }
                out.push_str(&line(serde_json::json!({
                    "command": "replica-show", "kind": "knowledge",
                    "knowledge": d.knowledge.to_string(), "forgotten": d.forgotten.to_string(),
                })));
                return Ok(out);
            }
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
            let b = open(&data_dir, replica, init, trace_dir.as_deref())
                .await?
                .export_bundle(&out, full)
                .await?;
            let changes = b.messages.len().saturating_sub(1);
            Ok(if json {
                line(serde_json::json!({
                    "command": "export-bundle", "replica": replica, "changes": changes,
                    "file": out.display().to_string(), "full": full,
                }))
            } else {
                format!(
                    "wrote {changes} change(s) of replica {replica} to {}\n",
                    out.display()
                )
            })
        }
        KnowledgeCommand::ImportBundle {
            data_dir,
            replica,
            policy,
            file,
        } => {
            let mut r =
                LocalReplica::open_traced(&data_dir, replica, policy, init, trace_dir.as_deref())
                    .await?;
            let rep = r.import_bundle(&file).await?;
            if json {
                return Ok(line(serde_json::json!({
                    "command": "import-bundle", "replica": replica, "changes": rep.changes,
                    "applied": rep.applied, "obsolete": rep.obsolete,
                    "conflicts": rep.conflicts, "learned": rep.learned,
                })));
            }
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

/// One JSON object as a line.
fn line(value: serde_json::Value) -> String {
    format!("{value}\n")
}
