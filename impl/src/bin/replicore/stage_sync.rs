//! The `replicore stage-sync` subcommands of protocol 4: run a peer, and, as its local user,
//! edit the shared document or show it. The binary only wires them in.

use anyhow::Context as _;
use clap::Subcommand;
use replicore_model::stage_sync::Edit;
use replicore_runtime::runtime::config::TransportSettings;
use replicore_runtime::runtime::tls::Role;
use replicore_runtime::stage_sync::{self, Client, PeerConfig, StageError, View};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Stage-sync commands.
#[derive(Debug, Subcommand)]
pub enum StageCommand {
    /// Run peer `--id` of a group (until killed). Every peer is given every address, in id
    /// order; a higher id is a higher priority.
    Peer {
        /// This peer's id: its position in the `--peer` list, from 0.
        #[arg(long)]
        id: u64,
        /// A peer's address (host:port); repeat for every peer, in id order, this one's
        /// included.
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Insert VALUE at position AT of the document, through the peer at `--connect`.
    Insert {
        /// The peer's address.
        #[arg(long)]
        connect: String,
        /// The position (past the end: at the end).
        at: u32,
        /// The value (or give --value-file).
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from this file (UTF-8 text: this protocol's values are strings);
        /// `-` reads stdin.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        value_file: Option<PathBuf>,
    },
    /// Remove the value at position AT of the document, through the peer at `--connect`.
    Remove {
        /// The peer's address.
        #[arg(long)]
        connect: String,
        /// The position (past the end: nothing).
        at: u32,
    },
    /// Print the document of the peer at `--connect`, its stage and stability line.
    Show {
        /// The peer's address.
        #[arg(long)]
        connect: String,
    },
    /// Replay the traces in a directory through each peer's actor (trace conformance).
    CheckTrace {
        /// The directory the peers recorded their traces in (`--trace-dir`).
        dir: PathBuf,
    },
}

/// The id a command-line user connects with: above every peer's, and apart per process.
fn client_id() -> u64 {
    // In the client id range, so that a client certificate may claim it.
    replicore_runtime::runtime::transport::CLIENT_ID_MIN + u64::from(std::process::id())
}

/// Prints a view.
pub fn view_text(v: &View) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "stage {}  stable {}  held {}  items {}",
        v.stage,
        v.stable,
        v.held,
        v.items.len()
    );
    for (i, item) in v.items.iter().enumerate() {
        let _ = writeln!(s, "{i:>4}  {item}");
    }
    s
}

/// A view as JSON lines: the stages, then one object per item.
fn view_json(v: &View) -> String {
    let mut s = format!(
        "{}\n",
        serde_json::json!({
            "command": "show", "kind": "stages", "stage": v.stage, "stable": v.stable,
            "held": v.held, "items": v.items.len(),
        })
    );
    for (i, item) in v.items.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}",
            serde_json::json!({"command": "show", "kind": "item", "at": i, "value": item})
        );
    }
    s
}

/// What an edit prints.
fn edited(json: bool, command: &str, id: impl std::fmt::Display, stage: u32) -> String {
    if json {
        format!(
            "{}\n",
            serde_json::json!({
                "command": command, "outcome": "executed", "operation": id.to_string(),
                "stage": stage,
            })
        )
    } else {
        format!("operation {id} executed at stage {stage}\n")
    }
}

/// Runs a stage-sync command with the group's cluster id and key; returns what to print
/// (one JSON object per line with `json`).
pub async fn run(
    cmd: StageCommand,
    (cluster_id, key, transport): (u64, Vec<u8>, TransportSettings),
    init: bool,
    trace_dir: Option<PathBuf>,
    metrics_listen: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    let connect = |addr: String| {
        let key = key.clone();
        let security = transport.security(Role::Client);
        async move {
            let security = security.context("cannot set up TLS for a client")?;
            anyhow::Ok(
                Client::connect_secured(&addr, cluster_id, &key, client_id(), security).await?,
            )
        }
    };
    match cmd {
        StageCommand::Peer {
            id,
            peers,
            data_dir,
        } => {
            let security = transport
                .security(Role::Node(id))
                .with_context(|| format!("cannot set up TLS for peer {id}"))?;
            crate::reload_on_sighup(&security)?;
            if let Some(addr) = peers.get(id as usize) {
                let client = transport
                    .security(Role::Client)
                    .context("cannot set up TLS for a client")?;
                crate::refuse_running(
                    addr,
                    id,
                    &format!("stage-sync peer {id}"),
                    cluster_id,
                    &key,
                    client,
                )
                .await?;
            }
            let handle = stage_sync::spawn(PeerConfig {
                id,
                addrs: peers,
                listen: None,
                cluster_id,
                key,
                security,
                data_dir,
                init,
                faults: None,
                trace_dir,
            })
            .await?;
            tracing::info!(peer = id, addr = %handle.addr, "stage-sync peer running");
            let endpoint = tokio_util::sync::CancellationToken::new();
            if let Some(addr) = metrics_listen {
                // Ready while it runs: the endpoint stops with the peer.
                let name = format!("stage-sync peer {id}");
                let ready = std::sync::Arc::new(|| true);
                crate::start_metrics(addr, &name, ready, endpoint.clone()).await?;
            }
            let _stop_endpoint = endpoint.drop_guard();
            handle
                .run_until(async {
                    // Ctrl-C or SIGTERM: a graceful stop closes the database cleanly.
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(mut term) => {
                            tokio::select! {
                                _ = tokio::signal::ctrl_c() => {}
                                _ = term.recv() => {}
                            }
                        }
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                })
                .await?;
            Ok(String::new())
        }
        StageCommand::Insert {
            connect: addr,
            at,
            value,
            value_file,
        } => {
            let value = crate::values::read_text(value, value_file.as_deref())?;
            let (id, stage) = connect(addr)
                .await?
                .edit(Edit::Insert { at, value })
                .await?;
            Ok(edited(json, "insert", id, stage))
        }
        StageCommand::Remove { connect: addr, at } => {
            let (id, stage) = connect(addr).await?.edit(Edit::Remove { at }).await?;
            Ok(edited(json, "remove", id, stage))
        }
        StageCommand::Show { connect: addr } => {
            let view = connect(addr).await?.show().await?;
            Ok(if json {
                view_json(&view)
            } else {
                view_text(&view)
            })
        }
        StageCommand::CheckTrace { dir } => Ok(format!(
            "{}\n",
            stage_sync::check_trace(&dir).map_err(|e| StageError::Closed(e.to_string()))?
        )),
    }
}
