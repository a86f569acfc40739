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
    /// Set a key through the approver (the master, or the backup once it took over): the
    /// value from the command line, or from --value-file (any bytes; `-` reads stdin).
    Put {
        /// The key (not empty).
        key: String,
        /// The value (or give --value-file).
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from this file, byte for byte; `-` reads stdin.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        value_file: Option<PathBuf>,
        /// Give up after this many milliseconds, in all (the client's whole wait).
        #[arg(long, alias = "timeout", default_value_t = 10_000)]
        within_ms: u64,
    },
    /// Remove a key through the approver.
    Delete {
        /// The key.
        key: String,
        /// Give up after this many milliseconds, in all.
        #[arg(long, alias = "timeout", default_value_t = 10_000)]
        within_ms: u64,
    },
    /// Read a key at the approver (linearizable): the value on stdout, the version on
    /// stderr (both in one object with --json).
    Get {
        /// The key.
        key: String,
        /// Give up after this many milliseconds, in all.
        #[arg(long, alias = "timeout", default_value_t = 10_000)]
        within_ms: u64,
        /// Write the value's bytes exactly, without a newline (for binary values).
        #[arg(long)]
        raw: bool,
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
    /// Where a server serves its metrics endpoint (`--metrics-listen`).
    pub metrics_listen: Option<String>,
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

/// Runs a failover command; the text to print (one JSON object per line with `json`).
pub async fn run(cmd: FailoverCommand, cluster: FailoverCluster, json: bool) -> Result<String> {
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
            crate::refuse_running(
                addr,
                id,
                &format!("failover server {id}"),
                cluster.cluster_id,
                &cluster.key,
                cluster.client_security()?,
            )
            .await?;
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
            let endpoint = tokio_util::sync::CancellationToken::new();
            if let Some(addr) = &cluster.metrics_listen {
                // Ready while it runs: the endpoint stops with the server.
                let name = format!("replicore failover server {id}");
                let ready = std::sync::Arc::new(|| true);
                crate::start_metrics(addr, &name, ready, endpoint.clone()).await?;
            }
            let _stop_endpoint = endpoint.drop_guard();
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
            value_file,
            within_ms,
        } => {
            crate::values::check_key(&key)?;
            let value = crate::values::read(value, value_file.as_deref())?;
            let r = cluster
                .client()?
                .put(&key, &value, Duration::from_millis(within_ms))
                .await;
            written(json, "put", &key, r, "written")
        }
        FailoverCommand::Delete { key, within_ms } => {
            crate::values::check_key(&key)?;
            let r = cluster
                .client()?
                .delete(&key, Duration::from_millis(within_ms))
                .await;
            written(json, "delete", &key, r, "deleted")
        }
        FailoverCommand::Get {
            key,
            within_ms,
            raw,
        } => {
            let (value, version) = cluster
                .client()?
                .get(&key, Duration::from_millis(within_ms))
                .await
                .context("get failed")?;
            if json {
                let mut o = serde_json::Map::new();
                o.insert("command".into(), "failover-get".into());
                o.insert("key".into(), key.clone().into());
                o.insert("version".into(), version.into());
                o.insert("found".into(), value.is_some().into());
                if let Some(v) = &value {
                    crate::values::json_fields(v, &mut o);
                }
                crate::exit::print_json(&o.into());
            }
            let Some(v) = value else {
                return Err(crate::exit::fail(
                    crate::exit::NOT_FOUND,
                    format!("key {key:?} not found at the approver (version {version})"),
                ));
            };
            if !json {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                out.write_all(&v).context("cannot write the value")?;
                if !raw {
                    out.write_all(b"\n").context("cannot write the value")?;
                }
                out.flush().context("cannot write the value")?;
                eprintln!("read at version {version}");
            }
            Ok(String::new())
        }
        FailoverCommand::Status => {
            let mut out = String::new();
            let mut down = Vec::new();
            let security = cluster.client_security()?;
            for (i, addr) in cluster.servers.iter().enumerate() {
                let r =
                    role_of_secured(addr, cluster.cluster_id, &cluster.key, security.clone()).await;
                let (line, object) = match r {
                    Ok(Reply::Role {
                        role,
                        epoch,
                        version,
                        keys,
                        digest,
                        ..
                    }) => {
                        let hex = crate::values::hex(&digest);
                        (
                            format!(
                                "server {i}  {addr}  role {role}  epoch {epoch}  version {version}  keys {keys}  digest {}",
                                &hex[..16]
                            ),
                            serde_json::json!({
                                "command": "failover-status", "node": i, "addr": addr,
                                "reachable": true, "role": role, "epoch": epoch,
                                "version": version, "keys": keys, "digest": hex,
                            }),
                        )
                    }
                    Ok(_) => {
                        down.push(i);
                        (
                            format!("server {i}  {addr}  not a failover server"),
                            serde_json::json!({
                                "command": "failover-status", "node": i, "addr": addr,
                                "reachable": false, "error": "not a failover server",
                            }),
                        )
                    }
                    Err(e) => {
                        down.push(i);
                        (
                            format!("server {i}  {addr}  unreachable: {e}"),
                            serde_json::json!({
                                "command": "failover-status", "node": i, "addr": addr,
                                "reachable": false, "error": e.to_string(),
                            }),
                        )
                    }
                };
                out.push_str(&if json { object.to_string() } else { line });
                out.push('\n');
            }
            if down.len() == cluster.servers.len() {
                print!("{out}");
                return Err(crate::exit::fail(
                    crate::exit::NOT_SENT,
                    format!(
                        "no failover server is reachable ({})",
                        cluster.servers.join(", ")
                    ),
                ));
            }
            if !down.is_empty() {
                print!("{out}");
                let names: Vec<String> = down.iter().map(|i| format!("server {i}")).collect();
                return Err(crate::exit::fail(
                    crate::exit::DEGRADED,
                    format!("not every server answered: {} down", names.join(", ")),
                ));
            }
            Ok(out)
        }
    }
}

/// Reports a put's or a delete's outcome: the version written, or the failure.
fn written(
    json: bool,
    command: &str,
    key: &str,
    r: Result<u64, replicore_runtime::failover::FailoverClientError>,
    done: &str,
) -> Result<String> {
    match r {
        Ok(version) if json => Ok(format!(
            "{}\n",
            serde_json::json!({
                "command": format!("failover-{command}"), "outcome": "committed",
                "key": key, "version": version,
            })
        )),
        Ok(version) => Ok(format!("{done}: version {version}\n")),
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("{command} failed"));
            if json {
                let code = crate::exit::code_of(&e);
                crate::exit::print_json(&serde_json::json!({
                    "command": format!("failover-{command}"), "outcome": crate::exit::outcome(code),
                    "key": key, "error": crate::one_line(&e),
                }));
            }
            Err(e)
        }
    }
}
