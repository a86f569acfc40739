//! `replicore`: run a master or slave node, update and read a cluster, or run a local demo.
//!
//! Errors print one line on stderr and exit non-zero; logs go to stderr via `tracing`
//! (`RUST_LOG` adjusts them).

mod exit;
mod failover;
mod knowledge;
mod stage_sync;
mod values;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use replicore_runtime::master_slave::client::{Client, ClientError};
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig, UpdateError};
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
    /// Print one JSON object per line on stdout (for scripts; fields in docs/cli.md).
    #[arg(long, global = true)]
    json: bool,
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
    /// The cluster's pre-shared key, read from this file (its bytes, a trailing newline
    /// dropped). Without it: --key, then the REPLICORE_KEY environment variable, then the
    /// cluster file's `key`.
    #[arg(long, global = true, conflicts_with = "cluster_key")]
    key_file: Option<PathBuf>,
    /// The cluster's pre-shared key on the command line, where `ps` shows it to every user
    /// of the host: prefer --key-file or REPLICORE_KEY.
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
    #[arg(long, global = true, conflicts_with = "recover")]
    init: bool,
    /// This node's store was lost: create it anew in a directory that holds none, and
    /// rebuild before serving (protocol 1's master: from every slave, taking the most
    /// advanced copy and handing out versions past every one a slave has heard of; a
    /// slave: empty, from the master). Refused on a directory that holds a store.
    #[arg(long, global = true)]
    recover: bool,
    /// Testing only: write each step's save behind its messages (a deliberately broken
    /// runtime that the chaos test and trace conformance must catch). Refused by a build
    /// without the `testing` feature.
    #[arg(long, global = true, hide = true)]
    unsafe_send_before_save: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics and readiness at /health (a
    /// protocol-1 node, a failover server, a knowledge replica-serve or a stage-sync peer;
    /// see docs/runtime.md, "Observability").
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Log lines as text (the default) or as JSON objects, one per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Eq, PartialEq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
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
        command: knowledge::KnowledgeSyncCommand,
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
        /// Testing only: issue certificates that expired yesterday (a build with the
        /// `testing` feature).
        #[cfg(feature = "testing")]
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
    /// Set a key through the master: the value from the command line, or from
    /// --value-file (any bytes; `-` reads stdin).
    Put {
        /// The key (UTF-8, not empty).
        key: String,
        /// The value (or give --value-file).
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from this file, byte for byte; `-` reads stdin.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        value_file: Option<PathBuf>,
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
    /// Read a key on a node (the master by default): the value on stdout, the version it
    /// was read at on stderr (both in one object with --json).
    Get {
        /// The key.
        key: String,
        /// The node to read on (0 is the master).
        #[arg(long, default_value_t = 0)]
        node: u64,
        /// Write the value's bytes exactly, without a newline (for binary values).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
    },
    /// Every node's version and lag behind the master (negative when ahead).
    Status,
    /// List every key and value of a node (the master by default), read at one version.
    Dump {
        /// The node to read on (0 is the master).
        #[arg(long, default_value_t = 0)]
        node: u64,
    },
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
    /// How long this command waits in all, in milliseconds: connecting, queueing behind
    /// the master's other rounds, and the round itself. Past it the outcome is unknown
    /// (exit 4), or, when nothing was sent, exit 5.
    #[arg(long, default_value_t = 10_000)]
    timeout: u64,
    /// Two-phase: how long the master's round waits for every slave's vote once it starts,
    /// in milliseconds (half of --timeout by default; it must be below --timeout).
    #[arg(long, requires = "two_phase")]
    round_timeout: Option<u64>,
    /// The client id to submit as (random by default; give one to roll back later).
    #[arg(long)]
    client_id: Option<u64>,
}

impl UpdateArgs {
    fn mode(&self) -> Result<Mode> {
        if !self.two_phase {
            return Ok(Mode::OnePhase);
        }
        let round = self.round_timeout.unwrap_or(self.timeout / 2).max(1);
        if round >= self.timeout {
            return Err(exit::fail(
                exit::USAGE,
                format!(
                    "--round-timeout {round} must be below --timeout {}: the client would stop waiting before the master decides",
                    self.timeout
                ),
            ));
        }
        Ok(Mode::TwoPhase { timeout_ms: round })
    }

    /// When the client stops waiting.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(self.timeout)
    }
}

/// The merged cluster settings.
struct Cluster {
    cluster_id: u64,
    key: Vec<u8>,
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
    recover: bool,
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

/// The environment variable a cluster key may come from.
const KEY_ENV: &str = "REPLICORE_KEY";

/// The shortest cluster key accepted, in bytes: the handshake's proof and the derived TLS
/// keys are only as strong as the key.
const KEY_BYTES_MIN: usize = 16;

/// The cluster key from --key-file, --key, REPLICORE_KEY or the cluster file, in that
/// order; an empty or short key is refused.
fn cluster_key(a: &ClusterArgs, from_file: Option<String>) -> Result<Vec<u8>> {
    let (key, source) = if let Some(path) = &a.key_file {
        let mut bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?;
        // A key written by `echo` ends in a newline that is not part of it.
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        (bytes, format!("the key file {}", path.display()))
    } else if let Some(k) = &a.key {
        (k.clone().into_bytes(), "--key".to_string())
    } else if let Some(k) = std::env::var_os(KEY_ENV) {
        (
            std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec(),
            KEY_ENV.to_string(),
        )
    } else if let Some(k) = from_file {
        (k.into_bytes(), "the cluster file's key".to_string())
    } else {
        return Err(exit::fail(
            exit::USAGE,
            format!("no cluster key: give --key-file, set {KEY_ENV}, or a cluster file with a key"),
        ));
    };
    if key.is_empty() {
        return Err(exit::fail(
            exit::USAGE,
            format!("the cluster key from {source} is empty"),
        ));
    }
    if key.len() < KEY_BYTES_MIN {
        return Err(exit::fail(
            exit::USAGE,
            format!(
                "the cluster key from {source} is {} bytes, too weak: give at least {KEY_BYTES_MIN}",
                key.len()
            ),
        ));
    }
    Ok(key)
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
            key: cluster_key(a, file.key)?,
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
            recover: a.recover,
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
            self.key.clone(),
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
        #[cfg(feature = "testing")]
        {
            cfg.unsafe_send_before_save = self.unsafe_send_before_save;
        }
        #[cfg(not(feature = "testing"))]
        if self.unsafe_send_before_save {
            anyhow::bail!(
                "--unsafe-send-before-save is only in a build with the testing feature \
                 (cargo build -p replicore-runtime --features testing)"
            );
        }
        cfg.security = self.security(Role::Node(node_id))?;
        cfg.init = self.init;
        cfg.recover = self.recover;
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
        Client::connect_secured(addr, self.cluster_id, &self.key, client_id, security)
            .await
            .map(|c| {
                c.with_max_frame_bytes(
                    self.max_frame_bytes
                        .unwrap_or(replicore_runtime::runtime::codec::MAX_FRAME_BYTES_DEFAULT),
                )
            })
            .with_context(|| format!("cannot reach node {node} at {addr}"))
    }
}

fn init_logs(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => logs.json().try_init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
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
            eprintln!("{} (see replicore --help)", usage_line(&e.to_string()));
            return ExitCode::from(exit::USAGE);
        }
    };
    // Nodes log their life; clients and the demo (whose output is its story) only warnings.
    let node_command = match &cli.command {
        Command::MasterSlave { command } | Command::MasterSlaveAlias(command) => matches!(
            command,
            MasterSlaveCommand::Master { .. } | MasterSlaveCommand::Slave { .. }
        ),
        Command::Failover { command } => command.is_server(),
        Command::KnowledgeSync {
            command: knowledge::KnowledgeSyncCommand::Replica(command),
        }
        | Command::KnowledgeAlias(command) => {
            matches!(command, knowledge::KnowledgeCommand::ReplicaServe { .. })
        }
        Command::StageSync { command } => {
            matches!(command, stage_sync::StageCommand::Peer { .. })
        }
        _ => false,
    };
    init_logs(
        if node_command { "info" } else { "warn" },
        cli.cluster.log_format,
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = exit::code_of(&e);
            let line = one_line(&e);
            if json && !exit::json_printed() {
                exit::print_json(&serde_json::json!({
                    "outcome": exit::outcome(code),
                    "error": line,
                }));
            }
            eprintln!("error: {line}");
            ExitCode::from(code)
        }
    }
}

/// Clap's error on one line: its first line, with the arguments it lists (a missing
/// argument is named), without the usage that follows.
fn usage_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let mut line = lines.next().unwrap_or("invalid arguments").to_string();
    for more in lines {
        let more = more.trim();
        if more.is_empty() || more.starts_with("Usage:") || more.starts_with("For more") {
            break;
        }
        line.push(' ');
        line.push_str(more);
    }
    line
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
        Command::Demo { updates } => demo(updates, cli.json).await,
        Command::GenCerts {
            out,
            nodes,
            ca_dir,
            valid_days,
            #[cfg(feature = "testing")]
            expired,
        } => {
            #[cfg(not(feature = "testing"))]
            let expired = false;
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
                cli.json,
            )
        }
        Command::MasterSlave { command } | Command::MasterSlaveAlias(command) => {
            master_slave(command, &cli.cluster, cli.json).await
        }
        Command::KnowledgeSync {
            command: knowledge::KnowledgeSyncCommand::CheckTrace { dir },
        } => {
            conforms(&replicore_runtime::knowledge::check_trace(&dir)?, cli.json);
            Ok(())
        }
        Command::KnowledgeSync {
            command: knowledge::KnowledgeSyncCommand::Replica(command),
        }
        | Command::KnowledgeAlias(command) => {
            let cluster = if command.needs_cluster() {
                let c = Cluster::from_args(&cli.cluster)?;
                Some((c.cluster_id, c.key, c.transport))
            } else {
                None
            };
            only_protocol_1_recovers(&cli.cluster)?;
            let trace_dir = cli.cluster.trace_dir.clone();
            print!(
                "{}",
                knowledge::run(
                    command,
                    cluster,
                    cli.cluster.init,
                    trace_dir,
                    cli.cluster.metrics_listen.as_deref(),
                    cli.json
                )
                .await?
            );
            Ok(())
        }
        Command::StageSync {
            command: stage_sync::StageCommand::CheckTrace { dir },
        } => {
            conforms(&replicore_runtime::stage_sync::check_trace(&dir)?, cli.json);
            Ok(())
        }
        Command::StageSync { command } => {
            only_protocol_1_recovers(&cli.cluster)?;
            let c = Cluster::from_args(&cli.cluster)?;
            let trace_dir = cli.cluster.trace_dir.clone();
            print!(
                "{}",
                stage_sync::run(
                    command,
                    (c.cluster_id, c.key, c.transport),
                    c.init,
                    trace_dir,
                    cli.cluster.metrics_listen.as_deref(),
                    cli.json
                )
                .await?
            );
            Ok(())
        }
        Command::Failover {
            command: failover::FailoverCommand::CheckTrace { dir },
        } => {
            conforms(&replicore_runtime::failover::check_trace(&dir)?, cli.json);
            Ok(())
        }
        Command::Failover { command } => {
            only_protocol_1_recovers(&cli.cluster)?;
            let cluster = Cluster::from_args(&cli.cluster)?;
            let servers = std::iter::once(cluster.master()?.to_string())
                .chain(cluster.slaves.iter().cloned())
                .collect();
            let failover = failover::FailoverCluster {
                cluster_id: cluster.cluster_id,
                key: cluster.key.clone(),
                servers,
                heartbeat_ms: cluster.heartbeat_ms,
                max_frame_bytes: cluster
                    .max_frame_bytes
                    .unwrap_or(replicore_runtime::runtime::codec::MAX_FRAME_BYTES_DEFAULT),
                trace_dir: cluster.trace_dir.clone(),
                faults: cluster.faults.clone(),
                transport: cluster.transport.clone(),
                init: cluster.init,
                metrics_listen: cli.cluster.metrics_listen.clone(),
            };
            print!("{}", failover::run(command, failover, cli.json).await?);
            Ok(())
        }
    }
}

/// Prints a conforming replay's report: its sentence, or with `json` one object with
/// `"outcome": "ok"`, `"conforms": true`, the sentence as `report` and every count. A trace
/// that does not conform is an error (exit 1, `"conforms"` absent).
fn conforms<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) {
    if !json {
        println!("{report}");
        return;
    }
    let mut o = serde_json::json!({
        "outcome": exit::outcome(exit::OK),
        "conforms": true,
        "report": report.to_string(),
    });
    if let (Some(o), Ok(serde_json::Value::Object(fields))) =
        (o.as_object_mut(), serde_json::to_value(report))
    {
        o.extend(fields);
    }
    exit::print_json(&o);
}

/// Runs a protocol-1 command.
async fn master_slave(command: MasterSlaveCommand, args: &ClusterArgs, json: bool) -> Result<()> {
    if let MasterSlaveCommand::CheckTrace { dir } = &command {
        conforms(
            &replicore_runtime::master_slave::conformance::check_dir(dir)?,
            json,
        );
        return Ok(());
    }
    let cluster = Cluster::from_args(args)?;
    match command {
        MasterSlaveCommand::Master { data_dir, listen } => {
            refuse_duplicate(&cluster, MASTER_ID).await?;
            let listen = match listen {
                Some(l) => l,
                None => cluster.master()?.to_string(),
            };
            serve(
                cluster.node_config(MASTER_ID, data_dir, listen)?,
                args.metrics_listen.as_deref(),
            )
            .await
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
                &cluster.key,
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
            refuse_duplicate(&cluster, id).await?;
            let listen = match listen {
                Some(l) => l,
                None => cluster.addr_of(id)?.to_string(),
            };
            serve(
                cluster.node_config(id, data_dir, listen)?,
                args.metrics_listen.as_deref(),
            )
            .await
        }
        MasterSlaveCommand::Put {
            key,
            value,
            value_file,
            update,
        } => {
            values::check_key(&key)?;
            let value = values::read(value, value_file.as_deref())?;
            let op = replicore_model::store::KvOp::Put(key, value);
            submit(&cluster, op, &update, json).await
        }
        MasterSlaveCommand::Delete { key, update } => {
            values::check_key(&key)?;
            let op = replicore_model::store::KvOp::Delete(key);
            submit(&cluster, op, &update, json).await
        }
        MasterSlaveCommand::Rollback { client_id, req } => {
            let mut c = cluster.client(MASTER_ID, Some(client_id)).await?;
            let r = c.rollback(req, Duration::from_secs(10)).await;
            let (code, version, text) = match &r {
                Err(ClientError::Update(UpdateError::RolledBack { version })) => (
                    exit::OK,
                    Some(*version),
                    format!("rolled back: request {req} (version {version}) is aborted"),
                ),
                Err(ClientError::Update(u @ UpdateError::NoAnswer(_))) => {
                    (exit::UNKNOWN, None, u.to_string())
                }
                Err(ClientError::Update(u)) => (
                    exit::ABORTED,
                    None,
                    format!("request {req} was already aborted: {u}"),
                ),
                Ok(version) => (
                    exit::FAILED,
                    Some(*version),
                    format!("too late: request {req} is already committed as version {version}"),
                ),
                Err(e) => (
                    exit::client_code(e),
                    None,
                    format!("rollback of request {req} failed: {e}"),
                ),
            };
            if json {
                let mut o = serde_json::json!({
                    "command": "rollback",
                    "outcome": match (&r, code) {
                        (_, exit::OK) => "rolled_back",
                        (Ok(_), _) => "committed",
                        _ => exit::outcome(code),
                    },
                    "client_id": client_id,
                    "req": req,
                    "version": version,
                });
                if code != exit::OK {
                    o["error"] = text.clone().into();
                }
                exit::print_json(&o);
            } else if code == exit::OK {
                println!("{text}");
            }
            if code == exit::OK {
                Ok(())
            } else {
                Err(exit::fail(code, text))
            }
        }
        MasterSlaveCommand::Get { key, node, raw } => {
            let mut c = cluster.client(node, None).await?;
            let (version, value) = c
                .get(key.as_bytes())
                .await
                .with_context(|| format!("get from node {node} failed"))?;
            if json {
                let mut o = serde_json::Map::new();
                o.insert("command".into(), "get".into());
                o.insert("node".into(), node.into());
                o.insert("key".into(), key.clone().into());
                o.insert("version".into(), version.into());
                o.insert("found".into(), value.is_some().into());
                if let Some(v) = &value {
                    values::json_fields(v, &mut o);
                }
                exit::print_json(&o.into());
            }
            match value {
                Some(v) => {
                    if !json {
                        use std::io::Write as _;
                        let mut out = std::io::stdout().lock();
                        out.write_all(&v).context("cannot write the value")?;
                        if !raw {
                            out.write_all(b"\n").context("cannot write the value")?;
                        }
                        out.flush().context("cannot write the value")?;
                        eprintln!("read at version {version} on node {node}");
                    }
                    Ok(())
                }
                None => Err(exit::fail(
                    exit::NOT_FOUND,
                    format!("key {key:?} not found on node {node} (version {version})"),
                )),
            }
        }
        MasterSlaveCommand::Status => status(&cluster, json).await,
        MasterSlaveCommand::Dump { node } => dump(&cluster, node, json).await,
        MasterSlaveCommand::CheckTrace { .. } => unreachable!("handled above"),
    }
}

/// Prints every row of `node` at one committed version: pages are re-read from the start
/// when a commit lands between two of them.
async fn dump(cluster: &Cluster, node: u64, json: bool) -> Result<()> {
    const PAGE_ROWS: u32 = 1024;
    const ATTEMPTS: u32 = 5;
    let mut c = cluster.client(node, None).await?;
    let context = || format!("dump of node {node} failed");
    'attempt: for _ in 0..ATTEMPTS {
        let mut rows = Vec::new();
        let mut after = None;
        let mut version = None;
        loop {
            let (v, page, more) = c
                .scan(after.clone(), PAGE_ROWS)
                .await
                .with_context(context)?;
            if version.is_some_and(|first| first != v) {
                continue 'attempt;
            }
            version = Some(v);
            after = page.last().map(|(k, _)| k.clone());
            rows.extend(page);
            if !more {
                break;
            }
        }
        let version = version.unwrap_or(0);
        if !json {
            println!("node {node} at version {version}: {} keys", rows.len());
        }
        for (k, v) in rows {
            let key = String::from_utf8_lossy(&k).into_owned();
            if json {
                let mut o = serde_json::Map::new();
                o.insert("command".into(), "dump".into());
                o.insert("node".into(), node.into());
                o.insert("version".into(), version.into());
                o.insert("key".into(), key.into());
                values::json_fields(&v, &mut o);
                println!("{}", serde_json::Value::from(o));
            } else {
                println!("{key} = {}", String::from_utf8_lossy(&v));
            }
        }
        return Ok(());
    }
    bail!("dump of node {node}: a commit landed between every pair of pages in {ATTEMPTS} attempts")
}

/// Submits `op` through the master and reports its outcome, all within `--timeout`.
async fn submit(
    cluster: &Cluster,
    op: replicore_model::store::KvOp<String, Vec<u8>>,
    update: &UpdateArgs,
    json: bool,
) -> Result<()> {
    let mode = update.mode()?;
    let deadline = update.deadline();
    let master = cluster.master()?.to_string();
    let mut c = tokio::time::timeout_at(deadline, cluster.client(MASTER_ID, update.client_id))
        .await
        .map_err(|_| {
            exit::fail(
                exit::NOT_SENT,
                format!(
                    "cannot reach the master at {master} within --timeout {} ms; nothing was sent",
                    update.timeout
                ),
            )
        })??;
    let client_id = c.client_id();
    // Asking for the request number sends nothing that changes the data: a failure here
    // means the update was never sent.
    let req = tokio::time::timeout_at(deadline, c.next_req())
        .await
        .map_err(|_| {
            exit::fail(
                exit::NOT_SENT,
                format!(
                    "the master at {master} did not answer within --timeout {} ms; the update was not sent",
                    update.timeout
                ),
            )
        })?
        .map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "the update was not sent: the master at {master} failed before it"
            ))
        });
    let r = match req {
        Ok(req) => {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            c.update(op, mode, wait)
                .await
                .map(|(_, v)| (req, v))
                .map_err(|e| (Some(req), anyhow::Error::new(e)))
        }
        Err(e) => Err((None, e)),
    };
    match r {
        Ok((req, version)) => {
            if json {
                exit::print_json(&serde_json::json!({
                    "command": "update",
                    "outcome": "committed",
                    "version": version,
                    "client_id": client_id,
                    "req": req,
                }));
            } else {
                println!("committed version {version} (client {client_id} request {req})");
            }
            Ok(())
        }
        Err((req, e)) => {
            let code = exit::code_of(&e);
            let e = match req {
                Some(req) => {
                    e.context(format!("update by client {client_id} request {req} failed"))
                }
                None => e,
            };
            if json {
                exit::print_json(&serde_json::json!({
                    "command": "update",
                    "outcome": exit::outcome(code),
                    "client_id": client_id,
                    "req": req,
                    "error": one_line(&e),
                }));
            }
            Err(e)
        }
    }
}

/// Refuses to start node `id` while a node answering as `id` runs at its configured
/// address: two processes with one node id would both take its role (two slaves with one
/// id share one place in the master's state and corrupt each other's replication).
///
/// This asks the configured address, so it catches a second process started from the same
/// cluster file (with its own `--listen` or data directory). A node started with another
/// `--listen` and never at its configured address is not seen.
async fn refuse_duplicate(cluster: &Cluster, id: u64) -> Result<()> {
    let Ok(addr) = cluster.addr_of(id) else {
        return Ok(());
    };
    let name = if id == MASTER_ID {
        "the master".to_string()
    } else {
        format!("slave {id}")
    };
    let security = cluster.security(Role::Client)?;
    refuse_running(addr, id, &name, cluster.cluster_id, &cluster.key, security).await
}

/// Refuses to start `what` (node `id`) when a node already answers as `id` at `addr`, the
/// address the cluster gives that id: the handshake names the node that answers. A probe
/// that cannot connect within a few seconds finds nothing, and the start goes on.
pub(crate) async fn refuse_running(
    addr: &str,
    id: u64,
    what: &str,
    cluster_id: u64,
    key: &[u8],
    security: replicore_runtime::runtime::tls::Security,
) -> Result<()> {
    use replicore_runtime::runtime::handshake::Identity;
    use replicore_runtime::runtime::transport;
    const PROBE: Duration = Duration::from_secs(3);
    // A client id, as clients have: a certificate for one may claim it.
    let me = Identity::new(
        cluster_id,
        transport::CLIENT_ID_MIN + u64::from(std::process::id()),
        key.to_vec(),
    )
    .with_security(security);
    if let Ok(Ok((_, answered))) = tokio::time::timeout(PROBE, transport::connect(addr, &me)).await
        && answered == id
    {
        return Err(exit::fail(
            exit::FAILED,
            format!(
                "{what} already runs at {addr} (it answered as node {id}); refusing to start a second one with id {id}"
            ),
        ));
    }
    Ok(())
}

/// Starts `name`'s metrics endpoint at `addr` (`--metrics-listen`): installs the process's
/// recorder, binds, prints the bound address (`{name} metrics on http://…/metrics`, so port 0
/// works), and serves `/metrics` and `/health` (`ready`) until `stop` is cancelled.
pub(crate) async fn start_metrics(
    addr: &str,
    name: &str,
    ready: replicore_runtime::runtime::metrics::Readiness,
    stop: tokio_util::sync::CancellationToken,
) -> Result<()> {
    use replicore_runtime::runtime::metrics;
    let handle = metrics::install()?;
    let listener = metrics::bind(addr).await?;
    let bound = listener.local_addr().context("metrics listener address")?;
    println!("{name} metrics on http://{bound}/metrics");
    tokio::spawn(metrics::serve(listener, handle, ready, stop));
    Ok(())
}

/// Runs one node until Ctrl-C or SIGTERM, then shuts it down gracefully.
async fn serve(cfg: NodeConfig, metrics_listen: Option<&str>) -> Result<()> {
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
    if let Some(addr) = metrics_listen {
        let name = format!("replicore {role}");
        start_metrics(addr, &name, node.readiness(), cancel.clone()).await?;
    }
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
    json: bool,
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
    let mut files = vec!["ca.pem".to_string()];
    if ca_dir.is_none() {
        files.push("ca.key".into());
    }
    for role in (0..nodes).map(Role::Node).chain([Role::Client]) {
        ca.issue(out, cluster_id, role, from, to)?;
        let stem = role.stem();
        files.push(format!("{stem}.pem"));
        files.push(format!("{stem}.key"));
    }
    if json {
        exit::print_json(&serde_json::json!({
            "command": "gen-certs",
            "outcome": exit::outcome(exit::OK),
            "cluster_id": cluster_id,
            "dir": out.display().to_string(),
            "new_ca": ca_dir.is_none(),
            "nodes": nodes,
            "not_after_unix": to,
            "files": files,
        }));
        return Ok(());
    }
    println!(
        "wrote ca.pem, node-0..node-{} and client certificates for cluster {cluster_id} in {}",
        nodes.saturating_sub(1),
        out.display()
    );
    Ok(())
}

/// Every node's version, its lag behind the master (negative when ahead), and whether it
/// agrees with the master; exits [`exit::DEGRADED`] when a node does not answer.
async fn status(cluster: &Cluster, json: bool) -> Result<()> {
    let mut master_version = None;
    let mut master_digest = None;
    let mut suspect = Vec::new();
    let mut down = Vec::new();
    let nodes = std::iter::once(MASTER_ID).chain(1..=cluster.slaves.len() as u64);
    for node in nodes {
        let addr = cluster.addr_of(node)?.to_string();
        let name = if node == MASTER_ID {
            "master ".to_string()
        } else {
            format!("slave {node}")
        };
        let role = if node == MASTER_ID { "master" } else { "slave" };
        let st = match cluster.client(node, None).await {
            Ok(mut c) => c.status().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match st {
            Ok(s) => {
                if node == MASTER_ID {
                    master_version = Some(s.version);
                    master_digest = Some(s.digest);
                }
                let lag = master_version.map(|m| i128::from(m) - i128::from(s.version));
                let lag_text = lag.map_or("?".to_string(), |l| l.to_string());
                let prepared = s.prepared.map_or("-".to_string(), |p| p.to_string());
                let digest = values::hex(&s.digest);
                // Equal versions name one state (claims 9, 43): different data at an equal
                // version is silent divergence, and a slave ahead of the master means the
                // master lost versions. Neither is a lag that replication repairs.
                let (state, note) = match master_version {
                    Some(m)
                        if node != MASTER_ID
                            && m == s.version
                            && master_digest != Some(s.digest) =>
                    {
                        suspect.push(format!(
                            "{} differs from the master at version {m}",
                            name.trim_end()
                        ));
                        (
                            "diverged",
                            "  DIVERGED: digest differs from the master's at an equal version",
                        )
                    }
                    Some(m) if node != MASTER_ID && s.version > m => {
                        suspect.push(format!(
                            "{} is ahead of the master ({} > {m})",
                            name.trim_end(),
                            s.version
                        ));
                        (
                            "ahead",
                            "  AHEAD of the master: the master has lost versions",
                        )
                    }
                    None if node != MASTER_ID => ("unknown", ""),
                    _ => ("ok", ""),
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "command": "status",
                            "node": node,
                            "role": role,
                            "addr": addr,
                            "reachable": true,
                            "version": s.version,
                            "lag": lag.map(|l| l as i64),
                            "prepared": s.prepared,
                            "keys": s.keys,
                            "digest": digest,
                            "state": state,
                        })
                    );
                } else {
                    println!(
                        "{name} {addr:<21} version {:>6}  lag {lag_text:>4}  prepared {prepared:>4}  keys {:>6}  digest {}{note}",
                        s.version,
                        s.keys,
                        &digest[..12]
                    );
                }
            }
            Err(e) => {
                down.push(name.trim_end().to_string());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "command": "status",
                            "node": node,
                            "role": role,
                            "addr": addr,
                            "reachable": false,
                            "error": one_line(&e),
                        })
                    );
                } else {
                    println!("{name} {addr:<21} unreachable: {}", one_line(&e));
                }
            }
        }
    }
    let total = cluster.slaves.len() + 1;
    if down.len() == total {
        return Err(exit::fail(
            exit::NOT_SENT,
            "no node of the cluster is reachable",
        ));
    }
    if !suspect.is_empty() {
        bail!("the cluster is inconsistent: {}", suspect.join("; "));
    }
    if !down.is_empty() {
        return Err(exit::fail(
            exit::DEGRADED,
            format!("not every node answered: {} down", down.join(", ")),
        ));
    }
    Ok(())
}

async fn demo(updates: u32, json: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("replicore-demo-{}", std::process::id()));
    let r = demo_in(&dir, updates, json).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// One line of the demo's story: the text, or with `json` one object (`command: "demo"`,
/// its `event` and fields).
fn demo_say(json: bool, text: impl FnOnce() -> String, event: serde_json::Value) {
    if !json {
        println!("{}", text());
        return;
    }
    let mut object = serde_json::json!({ "command": "demo" });
    if let (Some(o), serde_json::Value::Object(fields)) = (object.as_object_mut(), event) {
        o.extend(fields);
    }
    println!("{object}");
}

/// Waits until every demo slave holds `version`, for at most 10 s ("did not `what`").
async fn demo_reached(nodes: &[Node<KvStore>], version: u64, what: &str) -> Result<()> {
    for node in nodes {
        let mut versions = node.versions();
        tokio::time::timeout(
            Duration::from_secs(10),
            versions.wait_for(|v| *v >= version),
        )
        .await
        .map_err(|_| anyhow!("slave {} did not {what} within 10 s", node.node_id()))?
        .map_err(|_| anyhow!("slave {} stopped", node.node_id()))?;
    }
    Ok(())
}

async fn demo_in(dir: &std::path::Path, updates: u32, json: bool) -> Result<()> {
    use serde_json::json as j;
    let (cluster_id, key, slaves) = (42, "demo-key", 2u64);
    // Every node of the demo is created here, in a directory of its own.
    let mut cfg = NodeConfig::new(cluster_id, key, MASTER_ID, slaves, dir.join("master"));
    cfg.init = true;
    let master = Node::<KvStore>::start(cfg)
        .await
        .context("cannot start the demo master")?;
    let addr = master.local_addr();
    demo_say(
        json,
        || format!("master  listening on {addr}"),
        j!({"event": "listening", "node": MASTER_ID, "addr": addr.to_string()}),
    );
    let mut nodes = Vec::new();
    for id in 1..=slaves {
        let mut cfg = NodeConfig::new(cluster_id, key, id, slaves, dir.join(format!("slave{id}")));
        cfg.init = true;
        cfg.master_addr = master.local_addr().to_string();
        let node = Node::<KvStore>::start(cfg)
            .await
            .with_context(|| format!("cannot start demo slave {id}"))?;
        let addr = node.local_addr();
        demo_say(
            json,
            || format!("slave {id} listening on {addr}"),
            j!({"event": "listening", "node": id, "addr": addr.to_string()}),
        );
        nodes.push(node);
    }
    for node in &nodes {
        let mut versions = node.versions();
        let id = node.node_id();
        tokio::spawn(async move {
            while versions.changed().await.is_ok() {
                let v = *versions.borrow_and_update();
                demo_say(
                    json,
                    || format!("  slave {id} at version {v}"),
                    j!({"event": "slave-version", "node": id, "version": v}),
                );
            }
        });
    }

    if !json {
        println!("-- {updates} one-phase puts");
    }
    for i in 0..updates {
        let v = master
            .put(format!("key{i}"), format!("value{i}"), Mode::OnePhase)
            .await?;
        demo_say(
            json,
            || format!("master  committed version {v} (one-phase put key{i})"),
            j!({"event": "committed", "version": v, "op": "put", "key": format!("key{i}"), "mode": "one-phase"}),
        );
    }
    // A prepare sent to a slave that is not connected yet is lost, and its update aborts at
    // the timeout (the protocol's rule; a lost announcement is repaired by the heartbeat).
    // So the two-phase puts start once every slave holds the one-phase ones: connected.
    demo_reached(&nodes, master.version(), "connect").await?;
    if !json {
        println!("-- two-phase puts (every slave prepares, then the master commits)");
    }
    for i in 0..3 {
        let v = master
            .put(
                format!("sync{i}"),
                format!("synced{i}"),
                Mode::TwoPhase { timeout_ms: 5000 },
            )
            .await?;
        demo_say(
            json,
            || format!("master  committed version {v} (two-phase put sync{i})"),
            j!({"event": "committed", "version": v, "op": "put", "key": format!("sync{i}"), "mode": "two-phase"}),
        );
    }
    let v = master.delete("key0", Mode::OnePhase).await?;
    demo_say(
        json,
        || format!("master  committed version {v} (one-phase delete key0)"),
        j!({"event": "committed", "version": v, "op": "delete", "key": "key0", "mode": "one-phase"}),
    );

    if !json {
        println!("-- waiting for every slave to converge");
    }
    let target = master.version();
    demo_reached(&nodes, target, "converge").await?;
    let reference = master.view();
    demo_say(
        json,
        || {
            format!(
                "master  version {} with {} keys",
                reference.version,
                reference.data.len()
            )
        },
        j!({"event": "node", "node": MASTER_ID, "version": reference.version, "keys": reference.data.len()}),
    );
    for node in &nodes {
        let view = node.view();
        let same = view.data == reference.data;
        demo_say(
            json,
            || {
                format!(
                    "slave {} version {} with {} keys: {}",
                    node.node_id(),
                    view.version,
                    view.data.len(),
                    if same {
                        "identical to the master"
                    } else {
                        "DIFFERENT"
                    }
                )
            },
            j!({"event": "node", "node": node.node_id(), "version": view.version, "keys": view.data.len(), "identical": same}),
        );
        if !same || view.version != reference.version {
            bail!("slave {} diverged", node.node_id());
        }
    }
    demo_say(
        json,
        || format!("converged: every node at version {target}"),
        j!({"event": "converged", "version": target}),
    );
    for node in nodes {
        node.shutdown().await?;
    }
    master.shutdown().await?;
    Ok(())
}

/// `--recover` rebuilds a lost store of protocol 1's nodes; the other protocols create a
/// lost node again with `--init` (knowledge sync as a new incarnation).
fn only_protocol_1_recovers(a: &ClusterArgs) -> Result<()> {
    if a.recover {
        anyhow::bail!(
            "--recover is for protocol 1's master and slaves; create a lost node of this protocol again with --init"
        );
    }
    Ok(())
}
