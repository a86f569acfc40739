//! Protocol 2's servers: the model's `FailoverNode` on the generic driver, over TCP and redb.

use crate::runtime::codec::{Query, Reply};
use crate::runtime::conformance::{self, ConformanceError, Replayed};
use crate::runtime::driver::{Driver, DriverError, DriverOptions, Router};
use crate::runtime::faults::{FaultLayer, FaultPlan};
use crate::runtime::handshake::Identity;
use crate::runtime::node_loop::{self, Host, INBOX_INPUTS};
use crate::runtime::storage::{Disk, Durable, KvStore, Owner};
use crate::runtime::storage::{StorageError, digest_of};
use crate::runtime::trace::{TraceError, Tracer};
use crate::runtime::transport::{self, Link};
use replicore_model::failover::msg::{BACKUP, MASTER};
use replicore_model::failover::{FailoverNode, Msg, NodeStorage, Role, Timer, Timing, Variant};
use replicore_model::store::Version;
use stateright::actor::{Actor, Id};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The server actor on the runtime's key-value store.
pub type Server = FailoverNode<String, Vec<u8>>;
/// What a server saves.
pub type Storage = NodeStorage<String, Vec<u8>>;
/// A protocol-2 message on the runtime's store.
pub type WireMsg = Msg<String, Vec<u8>>;

impl Durable for Storage {
    type Data = KvStore;

    fn split(mut self) -> (KvStore, Self) {
        let data = std::mem::take(&mut self.data);
        (data, self)
    }

    fn join(mut self, data: KvStore) -> Self {
        self.data = data;
        self
    }

    fn version(&self) -> u64 {
        self.log.len() as u64
    }
}

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The driver stopped on a fatal error.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The config is inconsistent.
    #[error("invalid config: {0}")]
    Config(&'static str),
    /// The fault plan is invalid.
    #[error("invalid fault plan: {0}")]
    Faults(String),
    /// The trace could not be created.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The server task panicked or was aborted.
    #[error("server task failed: {0}")]
    Task(String),
}

/// The role a failover server's data directory records.
pub const ROLE: &str = "failover/server";

/// How one server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Its node id: 0 the master, 1 the backup, 2.. further slaves.
    pub node_id: u64,
    /// Every server's address, by node id.
    pub servers: Vec<String>,
    /// Where to listen (normally `servers[node_id]`; `127.0.0.1:0` in tests).
    pub listen: String,
    /// The cluster id.
    pub cluster_id: u64,
    /// The cluster's pre-shared key.
    pub key: Vec<u8>,
    /// How its connections are secured.
    pub security: crate::runtime::tls::Security,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Create the store when the directory has none (the explicit bootstrap, `--init`);
    /// otherwise a directory without one is refused (issue 18).
    pub init: bool,
    /// The frame limit.
    pub max_frame_bytes: usize,
    /// Timer durations.
    pub timing: Timing,
    /// Where to record this server's trace (`crate::runtime::trace`); `None` records nothing.
    pub trace_dir: Option<PathBuf>,
    /// Faults to inject into the frames this server sends to the other servers
    /// (`crate::runtime::faults`; testing only); `None` injects none.
    pub faults: Option<FaultPlan>,
}

/// What a failover server records in its trace header: enough to rebuild its actor.
#[derive(Clone, Debug, serde::Deserialize, Eq, PartialEq, serde::Serialize)]
pub struct TraceMeta {
    /// How many servers the cluster has.
    pub servers: usize,
}

/// Replays the traces in `dir` through each server's actor
/// ([`crate::runtime::conformance::replay`]).
pub fn check_trace(dir: &std::path::Path) -> Result<Replayed, ConformanceError> {
    let nodes = conformance::read_dir::<WireMsg, Timer, Storage>(dir)?;
    conformance::replay(&nodes, |node, header| {
        let meta: TraceMeta = serde_json::from_value(header.meta.clone())
            .map_err(|e| format!("node {node}: header meta: {e}"))?;
        if node as usize >= meta.servers {
            return Err(format!(
                "node {node} is not one of {} servers",
                meta.servers
            ));
        }
        Ok(server_actor(node, meta.servers, Timing::default()))
    })
}

/// What `status` shows of a server.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ServerView {
    /// The role.
    pub role: Role,
    /// The epoch.
    pub epoch: u64,
    /// The version (updates applied).
    pub version: Version,
    /// The data.
    pub data: KvStore,
}

/// A running protocol-2 server.
pub struct FailoverServer {
    local_addr: SocketAddr,
    view: watch::Receiver<ServerView>,
    cancel: CancellationToken,
    main: Option<tokio::task::JoinHandle<Result<(), DriverError>>>,
}

impl Drop for FailoverServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn view_of(state: &<Server as Actor>::State) -> ServerView {
    ServerView {
        role: state.role,
        epoch: state.epoch,
        version: state.version(),
        data: state.data.clone(),
    }
}

/// The server actor for node `node_id` of a cluster of `servers` servers.
pub fn server_actor(node_id: u64, servers: usize, timing: Timing) -> Server {
    let designation = match node_id as usize {
        MASTER => Role::Master,
        BACKUP => Role::Backup,
        _ => Role::Slave,
    };
    let peers = (0..servers)
        .filter(|i| *i as u64 != node_id)
        .map(Id::from)
        .collect();
    let mut node = FailoverNode::new(Variant::Fenced, designation, Id::from(BACKUP), peers);
    node.timing = timing;
    node
}

impl FailoverServer {
    /// Opens the data directory, binds, and starts the server.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        if config.servers.len() < 2 || config.node_id as usize >= config.servers.len() {
            return Err(ServerError::Config(
                "protocol 2 needs a master and a backup, and the node id must name one of the servers",
            ));
        }
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let (dir, init) = (config.data_dir.clone(), config.init);
        let identity = Owner::new(config.cluster_id, config.node_id, ROLE);
        let disk = tokio::task::spawn_blocking(move || Disk::open_with(&dir, &identity, init))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))??;
        if let Some(plan) = &config.faults {
            plan.validate().map_err(ServerError::Faults)?;
        }
        let faults = config.faults.clone().map(|plan| {
            Arc::new(FaultLayer::new(
                plan,
                config.node_id,
                config.servers.len() as u64 - 1,
            ))
        });
        let router = match &faults {
            Some(f) => Router::with_faults(f.clone()),
            None => Router::default(),
        };
        let actor = server_actor(config.node_id, config.servers.len(), config.timing.clone());
        let options = DriverOptions {
            max_frame_bytes: config.max_frame_bytes,
            ..DriverOptions::default()
        };
        let tracer = match &config.trace_dir {
            Some(dir) => {
                let meta = serde_json::to_value(TraceMeta {
                    servers: config.servers.len(),
                })
                .unwrap_or_default();
                Some(Tracer::create(dir, config.node_id, meta)?)
            }
            None => None,
        };
        let mut driver = Driver::start_traced(
            actor,
            Id::from(config.node_id as usize),
            disk,
            router.clone(),
            options,
            tracer,
        )
        .await?;
        driver.set_observer(Box::new(super::observe::ServerObserver::new(
            config.node_id,
        )));
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_INPUTS);
        let cancel = CancellationToken::new();
        let link = Link {
            identity: Identity::new(config.cluster_id, config.node_id, config.key.clone())
                .with_security(config.security.clone()),
            router,
            inbox: inbox_tx,
            max_frame_bytes: config.max_frame_bytes,
            cancel: cancel.clone(),
        };
        let first = view_of(driver.state());
        if let Some(f) = &faults {
            // Successive incarnations resume from growing versions: fresh draws.
            f.reseed(first.version);
            tracing::warn!(
                node = config.node_id,
                "injecting faults into frames between servers"
            );
        }
        tracing::info!(
            node = config.node_id,
            %local_addr,
            role = first.role.name(),
            epoch = first.epoch,
            version = first.version,
            "failover server started; listening on {local_addr}"
        );
        let (view_tx, view_rx) = watch::channel(first);
        for (peer, addr) in config.servers.iter().enumerate() {
            if (peer as u64) < config.node_id {
                tokio::spawn(transport::dial_loop(addr.clone(), link.clone()));
            }
        }
        tokio::spawn(transport::accept_loop(listener, link));
        let mut host = Published {
            node_id: config.node_id,
            view: view_tx,
        };
        let node_cancel = cancel.clone();
        let node_id = config.node_id;
        let main = tokio::spawn(async move {
            let (mut driver, mut inbox) = (driver, inbox_rx);
            node_loop::run(&mut driver, &mut inbox, &node_cancel, &mut host).await?;
            tracing::info!(node = node_id, "failover server stopped");
            Ok(())
        });
        Ok(FailoverServer {
            local_addr,
            view: view_rx,
            cancel,
            main: Some(main),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its role, epoch, version and data now.
    pub fn view(&self) -> ServerView {
        self.view.borrow().clone()
    }

    /// Its views as they change.
    pub fn views(&self) -> watch::Receiver<ServerView> {
        self.view.clone()
    }

    /// Stops it and waits for its task.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.cancel.cancel();
        self.stopped().await
    }

    /// Waits until it stops (a storage failure stops it).
    pub async fn stopped(&mut self) -> Result<(), ServerError> {
        if let Some(main) = self.main.as_mut() {
            let r = main.await;
            self.main = None;
            match r {
                Ok(r) => r?,
                Err(e) => return Err(ServerError::Task(e.to_string())),
            }
        }
        Ok(())
    }
}

/// Protocol 2 around the node loop: answers reads and `status`, publishes each view.
struct Published {
    node_id: u64,
    view: watch::Sender<ServerView>,
}

impl Host<Server> for Published {
    fn answer(&mut self, state: &<Server as Actor>::State, _: Id, query: Query) -> Reply {
        match query {
            Query::Get { key } => Reply::Value {
                version: state.version(),
                value: String::from_utf8(key)
                    .ok()
                    .and_then(|k| state.data.read(&k).cloned()),
            },
            Query::Role => Reply::Role {
                node_id: self.node_id,
                role: state.role.name().to_string(),
                epoch: state.epoch,
                version: state.version(),
                keys: state.data.len() as u64,
                digest: digest_of(&state.data),
            },
            Query::Status | Query::NextReq | Query::Scan { .. } => Reply::Unsupported,
        }
    }

    fn observe(&mut self, state: &<Server as Actor>::State) {
        let now = view_of(state);
        self.view.send_if_modified(|v| {
            if *v == now {
                return false;
            }
            *v = now;
            true
        });
    }
}
