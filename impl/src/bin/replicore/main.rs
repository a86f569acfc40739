//! `replicore`: run a master or slave node, update and read a cluster, or run a local demo.
//!
//! Errors print one line on stderr and exit non-zero; logs go to stderr via `tracing`
//! (`RUST_LOG` adjusts them).

mod failover;
mod knowledge;
mod stage_sync;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use replicore_runtime::master_slave::client::{Client, ClientError};
use replicore_runtime::master_slave::node::{
    MASTER_ID, Node, NodeConfig, UpdateError, answer_wait,
};
use replicore_runtime::runtime::config::{ClusterFile, TlsFiles, TransportMode, TransportSettings};
use replicore_runtime::runtime::handshake::HandshakeError;
use replicore_runtime::runtime::tls::{Authority, Role, Security};
use replicore_runtime::runtime::transport::TransportError;
use replicore_runtime::{KvStore, Mode};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "replicore",
    version,
    about = "Four data-replication protocols driven by model-checked actors: replicore <protocol> <verb>"
)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

/// Cluster settings: from `--config`, overridden by flags.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// A TOML cluster file (cluster_id, key, master, slaves, heartbeat_ms, ...).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The cluster id.
    #[arg(long, global = true)]
    cluster_id: Option<u64>,
    /// The cluster's pre-shared key.
    #[arg(long = "key", id = "cluster_key", global = true)]
    key: Option<String>,
    /// The master's address (host:port).
    #[arg(long, global = true)]
    master: Option<String>,
    /// A slave's address; repeat in node id order (the first is slave 1).
    #[arg(long = "slave", global = true)]
    slaves: Vec<String>,
    /// The master's heartbeat period, in milliseconds.
    #[arg(long, global = true)]
    heartbeat_ms: Option<u64>,
    /// Record this node's trace (JSON lines) in this directory, for trace conformance.
    #[arg(long, global = true)]
    trace_dir: Option<PathBuf>,
    /// Carry frames over plain TCP, unencrypted and unauthenticated after the handshake
    /// (benchmarks and loopback tests only; the cluster file's `transport = "plain"`).
    #[arg(long, global = true)]
    insecure_plaintext: bool,
    /// The CA bundle (PEM) that peers' certificates must chain to; with --tls-cert and
    /// --tls-key, TLS uses these files instead of keys derived from the cluster key.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// This process's certificate chain (PEM).
    #[arg(long, global = true)]
    tls_cert: Option<PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, global = true)]
    tls_key: Option<PathBuf>,
    /// Create this node's store if its data directory has none (every protocol's node and
    /// replica commands). Without it a missing or empty data directory is refused: a node
    /// is created once, explicitly, and an empty directory never means a fresh node.
    #[arg(long, global = true)]
    init: bool,
    /// Testing only: write each step's save behind its messages (a deliberately broken
    /// runtime that the chaos test and trace conformance must catch).
    #[arg(long, global = true, hide = true)]
    unsafe_send_before_save: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Protocol 1, master/slave replication: `master`, `slave`, `put`, `delete`, `rollback`,
    /// `get`, `status`, `check-trace` (also at the top level, as before).
    MasterSlave {
        #[command(subcommand)]
        command: MasterSlaveCommand,
    },
    /// Protocol 2, failover approver: `serve --id N`, `put`, `delete`, `get`, `status`
    /// (node 0 is the master, node 1 the backup: the cluster file's first slave).
    Failover {
        #[command(subcommand)]
        command: failover::FailoverCommand,
    },
    /// Protocol 3, knowledge sync: replica-put/-delete/-show, export-bundle, import-bundle,
    /// replica-serve, sync (also at the top level, as before).
    KnowledgeSync {
        #[command(subcommand)]
        command: knowledge::KnowledgeCommand,
    },
    /// Protocol 4, stage-ordered peer sync: `peer`, `insert`, `remove`, `show`.
    StageSync {
        #[command(subcommand)]
        command: stage_sync::StageCommand,
    },
    /// Issue a CA and certificates for nodes 0..N and for clients (PEM files in --out):
    /// ca.pem, ca.key, node-<id>.pem/.key, client.pem/.key.
    GenCerts {
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
        /// How many node ids to issue for (0..N).
        #[arg(long)]
        nodes: u64,
        /// Issue under the CA saved in this directory (ca.pem, ca.key) instead of a new one.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// How long the certificates are valid, in days from now.
        #[arg(long, default_value_t = 365)]
        valid_days: u32,
        /// Testing only: issue certificates that expired yesterday.
        #[arg(long, hide = true)]
        expired: bool,
    },
    /// A master and two slaves in this process on 127.0.0.1, a short workload, convergence.
    Demo {
        /// How many one-phase updates to run.
        #[arg(long, default_value_t = 10)]
        updates: u32,
    },
    #[command(flatten)]
    MasterSlaveAlias(MasterSlaveCommand),
    #[command(flatten)]
    KnowledgeAlias(knowledge::KnowledgeCommand),
}

/// `replicore master-slave <verb>`.
#[derive(Debug, Subcommand)]
enum MasterSlaveCommand {
    /// Run the master node.
    Master {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Listen here instead of the configured master address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run slave node `--id`.
    Slave {
        /// This slave's node id (1-based position in the slave list).
        #[arg(long)]
        id: u64,
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Listen here instead of the configured address of this slave.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Set a key through the master.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        update: UpdateArgs,
    },
    /// Remove a key through the master.
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        update: UpdateArgs,
    },
    /// Roll back an undecided two-phase update of client `--client-id`, request `--req`.
    Rollback {
        /// The client id the update was made with.
        #[arg(long)]
        client_id: u64,
        /// Its request number (printed by `put`/`delete`).
        #[arg(long)]
        req: u64,
    },
    /// Read a key on a node (the master by default).
    Get {
        /// The key.
        key: String,
        /// The node to read on (0 is the master).
        #[arg(long, default_value_t = 0)]
        node: u64,
    },
    /// Every node's version and lag behind the master.
    Status,
    /// Replay the traces in a directory through the model (trace conformance).
    CheckTrace {
        /// The directory the nodes recorded their traces in (`--trace-dir`).
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct UpdateArgs {
    /// Replicate synchronously: prepare on every slave, then commit (or abort).
    #[arg(long)]
    two_phase: bool,
    /// The two-phase timeout, in milliseconds.
    #[arg(long, default_value_t = 5000, requires = "two_phase")]
    timeout: u64,
    /// The client id to submit as (random by default; give one to roll back later).
    #[arg(long)]
    client_id: Option<u64>,
}

impl UpdateArgs {
    fn mode(&self) -> Mode {
        if self.two_phase {
            Mode::TwoPhase {
                timeout_ms: self.timeout,
            }
        } else {
            Mode::OnePhase
        }
    }

    fn wait(&self) -> Duration {
        answer_wait(self.mode())
    }
}

/// The merged cluster settings.
struct Cluster {
    cluster_id: u64,
    key: String,
    master: Option<String>,
    slaves: Vec<String>,
    heartbeat_ms: u64,
    history: Option<usize>,
    max_frame_bytes: Option<usize>,
    faults: Option<replicore_runtime::runtime::faults::FaultPlan>,
    trace_dir: Option<PathBuf>,
    unsafe_send_before_save: bool,
    transport: TransportSettings,
    init: bool,
}

/// The transport from the cluster file and the flags; warns when it is plain.
fn transport_settings(a: &ClusterArgs, file: &ClusterFile) -> Result<TransportSettings> {
    let plain = a.insecure_plaintext || file.transport == Some(TransportMode::Plain);
    // Flags name paths from the working directory, the file from its own directory.
    let from_file = |pick: fn(&TlsFiles) -> &String| {
        file.tls.as_ref().map(|t| {
            let p = PathBuf::from(pick(t));
            match &file.dir {
                Some(d) if p.is_relative() => d.join(p).display().to_string(),
                _ => p.display().to_string(),
            }
        })
    };
    let flag = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let ca = flag(&a.tls_ca).or_else(|| from_file(|t| &t.ca));
    let cert = flag(&a.tls_cert).or_else(|| from_file(|t| &t.cert));
    let key = flag(&a.tls_key).or_else(|| from_file(|t| &t.key));
    let files = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        (None, None, None) => None,
        _ => {
            bail!("certificates need all of --tls-ca, --tls-cert and --tls-key (or a [tls] table)")
        }
    };
    if plain && files.is_some() {
        bail!(
            "--insecure-plaintext (transport = \"plain\") and certificate files exclude each other"
        );
    }
    Ok(TransportSettings {
        plain,
        files,
        dir: None,
    })
}

/// Warns that frames travel in clear, louder when an address is off this host.
fn warn_if_plain(transport: &TransportSettings, addrs: &[&str]) {
    if !transport.plain {
        return;
    }
    let remote = addrs.iter().any(|a| {
        a.parse::<std::net::SocketAddr>()
            .map_or(true, |s| !s.ip().is_loopback())
    });
    if remote {
        tracing::warn!(
            "INSECURE: plain TCP to addresses off this host: anyone on the path can read and alter every frame"
        );
    } else {
        tracing::warn!(
            "insecure: plain TCP (--insecure-plaintext): frames are neither encrypted nor authenticated after the handshake"
        );
    }
}

/// Reloads the certificate files on each SIGHUP, for connections opened afterwards.
fn reload_on_sighup(security: &Security) -> Result<()> {
    let Security::Certificates(files) = security else {
        return Ok(());
    };
    let files = files.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match files.reload() {
                Ok(()) => {
                    tracing::info!(cert = %files.paths().cert.display(), "certificates reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate reload failed; keeping the certificates in use")
                }
            }
        }
    });
    Ok(())
}

impl Cluster {
    fn from_args(a: &ClusterArgs) -> Result<Self> {
        let file = match &a.config {
            Some(p) => ClusterFile::load(p)?,
            None => ClusterFile::default(),
        };
        let transport = transport_settings(a, &file)?;
        let addrs: Vec<&str> = file
            .master
            .iter()
            .chain(&file.slaves)
            .chain(&a.master)
            .chain(&a.slaves)
            .map(String::as_str)
            .collect();
        warn_if_plain(&transport, &addrs);
        Ok(Cluster {
            cluster_id: a
                .cluster_id
                .or(file.cluster_id)
                .ok_or_else(|| anyhow!("no cluster id: give --cluster-id or --config"))?,
            key: a
                .key
                .clone()
                .or(file.key)
                .ok_or_else(|| anyhow!("no cluster key: give --key or --config"))?,
            master: a.master.clone().or(file.master),
            slaves: if a.slaves.is_empty() {
                file.slaves
            } else {
                a.slaves.clone()
            },
            heartbeat_ms: a.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(100),
            history: file.history,
            max_frame_bytes: file.max_frame_bytes,
            faults: file.faults,
            trace_dir: a.trace_dir.clone(),
            unsafe_send_before_save: a.unsafe_send_before_save,
            transport,
            init: a.init,
        })
    }

    fn security(&self, role: Role) -> Result<Security> {
        let what = match role {
            Role::Node(id) => format!("node {id}"),
            Role::Client => "a client".to_string(),
        };
        self.transport
            .security(role)
            .with_context(|| format!("cannot set up TLS for {what}"))
    }

    fn master(&self) -> Result<&str> {
        self.master
            .as_deref()
            .ok_or_else(|| anyhow!("no master address: give --master or --config"))
    }

    fn addr_of(&self, node: u64) -> Result<&str> {
        if node == MASTER_ID {
            return self.master();
        }
        let i = usize::try_from(node - 1).context("node id too large")?;
        self.slaves.get(i).map(String::as_str).ok_or_else(|| {
            anyhow!(
                "no address for slave {node}: the cluster has {} slaves",
                self.slaves.len()
            )
        })
    }

    fn node_config(&self, node_id: u64, data_dir: PathBuf, listen: String) -> Result<NodeConfig> {
        let mut cfg = NodeConfig::new(
            self.cluster_id,
            self.key.as_bytes(),
            node_id,
            self.slaves.len() as u64,
            data_dir,
        );
        cfg.master_addr = self.master.clone().unwrap_or_default();
        cfg.listen = listen;
        let hb = Duration::from_millis(self.heartbeat_ms.max(1));
        cfg.heartbeat = hb..hb + hb / 2;
        if let Some(h) = self.history {
            cfg.history = h;
        }
        if let Some(m) = self.max_frame_bytes {
            cfg.max_frame_bytes = m;
        }
        cfg.faults = self.faults.clone();
        cfg.trace_dir = self.trace_dir.clone();
        cfg.unsafe_send_before_save = self.unsafe_send_before_save;
        cfg.security = self.security(Role::Node(node_id))?;
        cfg.init = self.init;
        Ok(cfg)
    }

    async fn client(&self, node: u64, client_id: Option<u64>) -> Result<Client> {
        if let Some(c) = client_id
            && c <= self.slaves.len() as u64
        {
            // Node ids name the master and the slaves; a client using one would be taken
            // for that node.
            bail!(
                "client id {c} is a node id; pick one above {}",
                self.slaves.len()
            );
        }
        if let Some(c) = client_id
            && self.transport.files.is_some()
            && c < replicore_runtime::runtime::transport::CLIENT_ID_MIN
        {
            // A client certificate speaks only for client ids (docs/runtime.md).
            bail!(
                "client id {c} is below {}: with certificates, client ids start there",
                replicore_runtime::runtime::transport::CLIENT_ID_MIN
            );
        }
        let addr = self.addr_of(node)?;
        let security = self.security(Role::Client)?;
        Client::connect_secured(
            addr,
            self.cluster_id,
            self.key.as_bytes(),
            client_id,
            security,
        )
        .await
        .with_context(|| format!("cannot reach node {node} at {addr}"))
    }
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{line} (see replicore --help)");
            return ExitCode::from(2);
        }
    };
    // Nodes log their life; clients and the demo (whose output is its story) only warnings.
    let node_command = match &cli.command {
        Command::MasterSlave { command } | Command::MasterSlaveAlias(command) => matches!(
            command,
            MasterSlaveCommand::Master { .. } | MasterSlaveCommand::Slave { .. }
        ),
        Command::Failover { command } => command.is_server(),
        _ => false,
    };
    init_logs(if node_command { "info" } else { "warn" });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { updates } => demo(updates).await,
        Command::GenCerts {
            out,
            nodes,
            ca_dir,
            valid_days,
            expired,
        } => {
            let file = match &cli.cluster.config {
                Some(p) => ClusterFile::load(p)?,
                None => ClusterFile::default(),
            };
            let cluster_id = cli
                .cluster
                .cluster_id
                .or(file.cluster_id)
                .ok_or_else(|| anyhow!("no cluster id: give --cluster-id or --config"))?;
            gen_certs(
                &out,
                cluster_id,
                nodes,
                ca_dir.as_deref(),
                valid_days,
                expired,
            )
        }
        Command::MasterSlave { command } | Command::MasterSlaveAlias(command) => {
            master_slave(command, &cli.cluster).await
        }
        Command::KnowledgeSync { command } | Command::KnowledgeAlias(command) => {
            let cluster = if command.needs_cluster() {
                let c = Cluster::from_args(&cli.cluster)?;
                Some((c.cluster_id, c.key.into_bytes(), c.transport))
            } else {
                None
            };
            let trace_dir = cli.cluster.trace_dir.clone();
            print!(
                "{}",
                knowledge::run(command, cluster, cli.cluster.init, trace_dir).await?
            );
            Ok(())
        }
        Command::StageSync {
            command: stage_sync::StageCommand::CheckTrace { dir },
        } => {
            println!("{}", replicore_runtime::stage_sync::check_trace(&dir)?);
            Ok(())
        }
        Command::StageSync { command } => {
            let c = Cluster::from_args(&cli.cluster)?;
            let trace_dir = cli.cluster.trace_dir.clone();
            print!(
                "{}",
                stage_sync::run(
                    command,
                    c.cluster_id,
                    c.key.into_bytes(),
                    c.transport,
                    c.init,
                    trace_dir
                )
                .await?
            );
            Ok(())
        }
        Command::Failover {
            command: failover::FailoverCommand::CheckTrace { dir },
        } => {
            println!("{}", replicore_runtime::failover::check_trace(&dir)?);
            Ok(())
        }
        Command::Failover { command } => {
            let cluster = Cluster::from_args(&cli.cluster)?;
            let servers = std::iter::once(cluster.master()?.to_string())
                .chain(cluster.slaves.iter().cloned())
                .collect();
            let failover = failover::FailoverCluster {
                cluster_id: cluster.cluster_id,
                key: cluster.key.clone().into_bytes(),
                servers,
                heartbeat_ms: cluster.heartbeat_ms,
                max_frame_bytes: cluster
                    .max_frame_bytes
                    .unwrap_or(replicore_runtime::runtime::codec::MAX_FRAME_BYTES_DEFAULT),
                trace_dir: cluster.trace_dir.clone(),
                faults: cluster.faults.clone(),
                transport: cluster.transport.clone(),
                init: cluster.init,
            };
            print!("{}", failover::run(command, failover).await?);
            Ok(())
        }
    }
}

/// Runs a protocol-1 command.
async fn master_slave(command: MasterSlaveCommand, args: &ClusterArgs) -> Result<()> {
    if let MasterSlaveCommand::CheckTrace { dir } = &command {
        let report = replicore_runtime::master_slave::conformance::check_dir(dir)?;
        println!("{report}");
        return Ok(());
    }
    let cluster = Cluster::from_args(args)?;
    match command {
        MasterSlaveCommand::Master { data_dir, listen } => {
            let listen = match listen {
                Some(l) => l,
                None => cluster.master()?.to_string(),
            };
            serve(cluster.node_config(MASTER_ID, data_dir, listen)?).await
        }
        MasterSlaveCommand::Slave {
            id,
            data_dir,
            listen,
        } => {
            if id == MASTER_ID {
                bail!("slave ids start at 1 (0 is the master)");
            }
            let master_addr = cluster.master()?.to_string();
            // A master that refuses this node (wrong cluster id or key) is a configuration
            // error: say so once and exit rather than redial forever. An unreachable master
            // is not: it may start later, and the node keeps dialing.
            let probe = Client::<KvStore>::connect_secured(
                &master_addr,
                cluster.cluster_id,
                cluster.key.as_bytes(),
                Some(id),
                cluster.security(Role::Node(id))?,
            )
            .await;
            if let Err(ClientError::Transport(TransportError::Handshake { source, .. })) = &probe
                && !matches!(source, HandshakeError::Io(_) | HandshakeError::TimedOut)
            {
                bail!("the master at {master_addr} refused this node: {source}");
            }
            drop(probe);
            let listen = match listen {
                Some(l) => l,
                None => cluster.addr_of(id)?.to_string(),
            };
            serve(cluster.node_config(id, data_dir, listen)?).await
        }
        MasterSlaveCommand::Put { key, value, update } => {
            let mut c = cluster.client(MASTER_ID, update.client_id).await?;
            let r = c
                .put(&key, value.as_bytes(), update.mode(), update.wait())
                .await;
            report_update(&c, r)
        }
        MasterSlaveCommand::Delete { key, update } => {
            let mut c = cluster.client(MASTER_ID, update.client_id).await?;
            let r = c.delete(&key, update.mode(), update.wait()).await;
            report_update(&c, r)
        }
        MasterSlaveCommand::Rollback { client_id, req } => {
            let mut c = cluster.client(MASTER_ID, Some(client_id)).await?;
            match c.rollback(req, Duration::from_secs(10)).await {
                Err(replicore_runtime::master_slave::client::ClientError::Update(
                    UpdateError::RolledBack { version },
                )) => {
                    println!("rolled back: request {req} (version {version}) is aborted");
                    Ok(())
                }
                Ok(version) => {
                    bail!("too late: request {req} is already committed as version {version}")
                }
                Err(e) => Err(e).context(format!("rollback of request {req} failed")),
            }
        }
        MasterSlaveCommand::Get { key, node } => {
            let mut c = cluster.client(node, None).await?;
            let (version, value) = c
                .get(key.as_bytes())
                .await
                .with_context(|| format!("get from node {node} failed"))?;
            match value {
                Some(v) => {
                    println!("{}", String::from_utf8_lossy(&v));
                    Ok(())
                }
                None => bail!("key {key:?} not found on node {node} (version {version})"),
            }
        }
        MasterSlaveCommand::Status => status(&cluster).await,
        MasterSlaveCommand::CheckTrace { .. } => unreachable!("handled above"),
    }
}

fn report_update(
    c: &Client,
    r: Result<(u64, u64), replicore_runtime::master_slave::client::ClientError>,
) -> Result<()> {
    let (req, version) = r.with_context(|| format!("update by client {} failed", c.client_id()))?;
    println!(
        "committed version {version} (client {} request {req})",
        c.client_id()
    );
    Ok(())
}

/// Runs one node until Ctrl-C or SIGTERM, then shuts it down gracefully.
async fn serve(cfg: NodeConfig) -> Result<()> {
    let role = if cfg.node_id == MASTER_ID {
        "master".to_string()
    } else {
        format!("slave {}", cfg.node_id)
    };
    let (listen, dir) = (cfg.listen.clone(), cfg.data_dir.clone());
    reload_on_sighup(&cfg.security)?;
    let mut node = Node::<KvStore>::start(cfg).await.with_context(|| {
        format!(
            "cannot start {role} (listen {listen}, data dir {})",
            dir.display()
        )
    })?;
    println!(
        "replicore {role} listening on {} at version {}",
        node.local_addr(),
        node.version()
    );
    let cancel = node.cancel_token();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
        _ = term.recv() => {}
        r = node.stopped() => return r.with_context(|| format!("{role} stopped")),
    }
    cancel.cancel();
    node.shutdown()
        .await
        .with_context(|| format!("{role} stopped with an error"))
}

/// Writes a CA (or uses the one in `ca_dir`) and certificates for nodes `0..nodes` and for
/// clients into `out`.
fn gen_certs(
    out: &std::path::Path,
    cluster_id: u64,
    nodes: u64,
    ca_dir: Option<&std::path::Path>,
    valid_days: u32,
    expired: bool,
) -> Result<()> {
    let ca = match ca_dir {
        Some(d) => Authority::open(d, cluster_id)
            .with_context(|| format!("cannot open the CA in {}", d.display()))?,
        None => Authority::new(cluster_id)?,
    };
    match ca_dir {
        // The CA stays where it is; its certificate is copied beside the new ones.
        Some(d) => {
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            std::fs::copy(d.join("ca.pem"), out.join("ca.pem"))
                .with_context(|| format!("cannot copy {}", d.join("ca.pem").display()))?;
        }
        None => ca.save(out)?,
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let day = 86_400;
    let (from, to) = if expired {
        (now - 30 * day, now - day)
    } else {
        // An hour of slack for clocks a little behind.
        (now - 3_600, now + i64::from(valid_days) * day)
    };
    for role in (0..nodes).map(Role::Node).chain([Role::Client]) {
        ca.issue(out, cluster_id, role, from, to)?;
    }
    println!(
        "wrote ca.pem, node-0..node-{} and client certificates for cluster {cluster_id} in {}",
        nodes.saturating_sub(1),
        out.display()
    );
    Ok(())
}

async fn status(cluster: &Cluster) -> Result<()> {
    let mut master_version = None;
    let mut master_digest = None;
    let mut suspect = Vec::new();
    let nodes = std::iter::once(MASTER_ID).chain(1..=cluster.slaves.len() as u64);
    let mut reachable = 0;
    for node in nodes {
        let addr = cluster.addr_of(node)?.to_string();
        let name = if node == MASTER_ID {
            "master ".to_string()
        } else {
            format!("slave {node}")
        };
        let st = match cluster.client(node, None).await {
            Ok(mut c) => c.status().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match st {
            Ok(s) => {
                reachable += 1;
                if node == MASTER_ID {
                    master_version = Some(s.version);
                    master_digest = Some(s.digest);
                }
                let lag = master_version.map_or("?".to_string(), |m| {
                    (i128::from(m) - i128::from(s.version)).to_string()
                });
                let prepared = s.prepared.map_or("-".to_string(), |p| p.to_string());
                let digest: String = s.digest[..6].iter().map(|b| format!("{b:02x}")).collect();
                // Equal versions name one state (claims 9, 43): different data at an equal
                // version is silent divergence, and a slave ahead of the master means the
                // master lost versions. Neither is a lag that replication repairs.
                let note = match master_version {
                    Some(m)
                        if node != MASTER_ID
                            && m == s.version
                            && master_digest != Some(s.digest) =>
                    {
                        suspect.push(format!(
                            "{} differs from the master at version {m}",
                            name.trim_end()
                        ));
                        "  DIVERGED: digest differs from the master's at an equal version"
                    }
                    Some(m) if node != MASTER_ID && s.version > m => {
                        suspect.push(format!(
                            "{} is ahead of the master ({} > {m})",
                            name.trim_end(),
                            s.version
                        ));
                        "  AHEAD of the master: the master has lost versions"
                    }
                    _ => "",
                };
                println!(
                    "{name} {addr:<21} version {:>6}  lag {lag:>4}  prepared {prepared:>4}  keys {:>6}  digest {digest}{note}",
                    s.version, s.keys
                );
            }
            Err(e) => println!("{name} {addr:<21} unreachable: {}", one_line(&e)),
        }
    }
    if reachable == 0 {
        bail!("no node of the cluster is reachable");
    }
    if !suspect.is_empty() {
        bail!("the cluster is inconsistent: {}", suspect.join("; "));
    }
    Ok(())
}

async fn demo(updates: u32) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("replicore-demo-{}", std::process::id()));
    let r = demo_in(&dir, updates).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

async fn demo_in(dir: &std::path::Path, updates: u32) -> Result<()> {
    let (cluster_id, key, slaves) = (42, "demo-key", 2u64);
    // Every node of the demo is created here, in a directory of its own.
    let mut cfg = NodeConfig::new(cluster_id, key, MASTER_ID, slaves, dir.join("master"));
    cfg.init = true;
    let master = Node::<KvStore>::start(cfg)
        .await
        .context("cannot start the demo master")?;
    println!("master  listening on {}", master.local_addr());
    let mut nodes = Vec::new();
    for id in 1..=slaves {
        let mut cfg = NodeConfig::new(cluster_id, key, id, slaves, dir.join(format!("slave{id}")));
        cfg.init = true;
        cfg.master_addr = master.local_addr().to_string();
        let node = Node::<KvStore>::start(cfg)
            .await
            .with_context(|| format!("cannot start demo slave {id}"))?;
        println!("slave {id} listening on {}", node.local_addr());
        nodes.push(node);
    }
    for node in &nodes {
        let mut versions = node.versions();
        let id = node.node_id();
        tokio::spawn(async move {
            while versions.changed().await.is_ok() {
                let v = *versions.borrow_and_update();
                println!("  slave {id} at version {v}");
            }
        });
    }

    println!("-- {updates} one-phase puts");
    for i in 0..updates {
        let v = master
            .put(format!("key{i}"), format!("value{i}"), Mode::OnePhase)
            .await?;
        println!("master  committed version {v} (one-phase put key{i})");
    }
    println!("-- two-phase puts (every slave prepares, then the master commits)");
    for i in 0..3 {
        let v = master
            .put(
                format!("sync{i}"),
                format!("synced{i}"),
                Mode::TwoPhase { timeout_ms: 5000 },
            )
            .await?;
        println!("master  committed version {v} (two-phase put sync{i})");
    }
    let v = master.delete("key0", Mode::OnePhase).await?;
    println!("master  committed version {v} (one-phase delete key0)");

    println!("-- waiting for every slave to converge");
    let target = master.version();
    for node in &nodes {
        let mut versions = node.versions();
        tokio::time::timeout(Duration::from_secs(10), versions.wait_for(|v| *v >= target))
            .await
            .map_err(|_| anyhow!("slave {} did not converge within 10 s", node.node_id()))?
            .map_err(|_| anyhow!("slave {} stopped", node.node_id()))?;
    }
    let reference = master.view();
    println!(
        "master  version {} with {} keys",
        reference.version,
        reference.data.len()
    );
    for node in &nodes {
        let view = node.view();
        let same = view.data == reference.data;
        println!(
            "slave {} version {} with {} keys: {}",
            node.node_id(),
            view.version,
            view.data.len(),
            if same {
                "identical to the master"
            } else {
                "DIFFERENT"
            }
        );
        if !same || view.version != reference.version {
            bail!("slave {} diverged", node.node_id());
        }
    }
    println!("converged: every node at version {target}");
    for node in nodes {
        node.shutdown().await?;
    }
    master.shutdown().await?;
    Ok(())
}
