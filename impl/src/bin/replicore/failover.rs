//! `replicore failover ...`: run a protocol-2 server given its node id in the cluster file
//! (0 the master, 1 the backup = the first slave), and a client that fails over by itself.

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use replicore_model::failover::Timing;
use replicore_runtime::failover::{Client, FailoverServer, ServerConfig, role_of_secured};
use replicore_runtime::runtime::codec::Reply;
use replicore_runtime::runtime::config::TransportSettings;
use replicore_runtime::runtime::tls::{Role, Security};
use std::path::PathBuf;
use std::time::Duration;

/// The `replicore failover` subcommands.
#[derive(Debug, Subcommand)]
pub enum FailoverCommand {
    /// Run server `--id` (0 the master, 1 the backup, 2.. further slaves).
    Serve {
        /// The node id: the position in the cluster file (master, then slaves in order).
        #[arg(long)]
        id: u64,
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Listen here instead of the configured address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Set a key through the approver (the master, or the backup once it took over).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        within_ms: u64,
    },
    /// Remove a key through the approver.
    Delete {
        /// The key.
        key: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        within_ms: u64,
    },
    /// Read a key at the approver (linearizable).
    Get {
        /// The key.
        key: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        within_ms: u64,
    },
    /// Every server's role, epoch, version and data digest.
    Status,
    /// Replay the traces in a directory through each server's actor (trace conformance).
    CheckTrace {
        /// The directory the servers recorded their traces in (`--trace-dir`).
        dir: PathBuf,
    },
}

impl FailoverCommand {
    /// Whether the command starts a server (which logs its life).
    pub fn is_server(&self) -> bool {
        matches!(self, FailoverCommand::Serve { .. })
    }
}

/// The cluster as the failover commands need it.
#[derive(Clone, Debug)]
pub struct FailoverCluster {
    /// The cluster id.
    pub cluster_id: u64,
    /// The pre-shared key.
    pub key: Vec<u8>,
    /// Server addresses by node id: the master, then the slaves (the first is the backup).
    pub servers: Vec<String>,
    /// The heartbeat period; the backup's lease check is five periods and a client waits
    /// three before trying the other server.
    pub heartbeat_ms: u64,
    /// The frame limit.
    pub max_frame_bytes: usize,
    /// Where a server records its trace.
    pub trace_dir: Option<PathBuf>,
    /// The faults a server injects (the cluster file's `[faults]`, testing only).
    pub faults: Option<replicore_runtime::runtime::faults::FaultPlan>,
    /// Plain TCP, or TLS with certificates or derived keys.
    pub transport: TransportSettings,
    /// Create the server's store if its data directory has none (`--init`).
    pub init: bool,
}

impl FailoverCluster {
    /// The timer durations.
    pub fn timing(&self) -> Timing {
        let ms = |n: u64| Duration::from_millis(self.heartbeat_ms.max(1) * n);
        Timing {
            heartbeat: ms(1)..ms(1),
            lease_check: ms(5)..ms(5),
            retry: ms(3)..ms(3),
        }
    }

    fn client(&self) -> Result<Client> {
        if self.servers.len() < 2 {
            bail!("protocol 2 needs a master and at least one slave (the backup) in the cluster");
        }
        Ok(Client::new(
            &self.servers[0],
            &self.servers[1],
            self.cluster_id,
            &self.key,
            self.timing(),
        )
        .with_security(self.client_security()?))
    }

    fn client_security(&self) -> Result<Security> {
        self.transport
            .security(Role::Client)
            .context("cannot set up TLS for a client")
    }
}

/// Runs a failover command; the text to print.
pub async fn run(cmd: FailoverCommand, cluster: FailoverCluster) -> Result<String> {
    match cmd {
        FailoverCommand::CheckTrace { dir } => Ok(format!(
            "{}\n",
            replicore_runtime::failover::check_trace(&dir)?
        )),
        FailoverCommand::Serve {
            id,
            data_dir,
            listen,
        } => {
            let addr = cluster.servers.get(id as usize).ok_or_else(|| {
                anyhow!("no server {id} in the cluster (0 is the master, 1 the backup)")
            })?;
            let listen = listen.unwrap_or_else(|| addr.clone());
            let security = cluster
                .transport
                .security(Role::Node(id))
                .with_context(|| format!("cannot set up TLS for server {id}"))?;
            crate::reload_on_sighup(&security)?;
            let config = ServerConfig {
                security,
                node_id: id,
                servers: cluster.servers.clone(),
                listen: listen.clone(),
                cluster_id: cluster.cluster_id,
                key: cluster.key.clone(),
                data_dir: data_dir.clone(),
                init: cluster.init,
                max_frame_bytes: cluster.max_frame_bytes,
                timing: cluster.timing(),
                trace_dir: cluster.trace_dir.clone(),
                faults: cluster.faults.clone(),
            };
            let mut server = FailoverServer::start(config).await.with_context(|| {
                format!(
                    "cannot start failover server {id} (listen {listen}, data dir {})",
                    data_dir.display()
                )
            })?;
            let v = server.view();
            println!(
                "replicore failover server {id} ({}, epoch {}) listening on {} at version {}",
                v.role.name(),
                v.epoch,
                server.local_addr(),
                v.version
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot watch SIGTERM")?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
                _ = term.recv() => {}
                r = server.stopped() => return r.map(|()| String::new()).with_context(|| format!("server {id} stopped")),
            }
            server
                .shutdown()
                .await
                .with_context(|| format!("server {id} stopped with an error"))?;
            Ok(String::new())
        }
        FailoverCommand::Put {
            key,
            value,
            within_ms,
        } => {
            let version = cluster
                .client()?
                .put(&key, value.as_bytes(), Duration::from_millis(within_ms))
                .await
                .context("put failed")?;
            Ok(format!("written: version {version}\n"))
        }
        FailoverCommand::Delete { key, within_ms } => {
            let version = cluster
                .client()?
                .delete(&key, Duration::from_millis(within_ms))
                .await
                .context("delete failed")?;
            Ok(format!("deleted: version {version}\n"))
        }
        FailoverCommand::Get { key, within_ms } => {
            let (value, version) = cluster
                .client()?
                .get(&key, Duration::from_millis(within_ms))
                .await
                .context("get failed")?;
            Ok(match value {
                Some(v) => format!("{} (version {version})\n", String::from_utf8_lossy(&v)),
                None => format!("(absent) (version {version})\n"),
            })
        }
        FailoverCommand::Status => {
            let mut out = String::new();
            let mut reachable = 0;
            let security = cluster.client_security()?;
            for (i, addr) in cluster.servers.iter().enumerate() {
                let line = match role_of_secured(
                    addr,
                    cluster.cluster_id,
                    &cluster.key,
                    security.clone(),
                )
                .await
                {
                    Ok(Reply::Role {
                        role,
                        epoch,
                        version,
                        keys,
                        digest,
                        ..
                    }) => {
                        reachable += 1;
                        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                        format!(
                            "server {i}  {addr}  role {role}  epoch {epoch}  version {version}  keys {keys}  digest {hex}"
                        )
                    }
                    Ok(_) => format!("server {i}  {addr}  not a failover server"),
                    Err(e) => format!("server {i}  {addr}  unreachable: {e}"),
                };
                out.push_str(&line);
                out.push('\n');
            }
            if reachable == 0 {
                bail!(
                    "no failover server is reachable ({})",
                    cluster.servers.join(", ")
                );
            }
            Ok(out)
        }
    }
}
