//! The embedding API: start a master or a slave node in this process, update through the
//! master, read on any node, watch committed versions, shut down gracefully.

use crate::master_slave::conformance::NodeMeta;
use crate::runtime::codec::{NodeStatus, Query, Reply};
use crate::runtime::driver::{Driver, DriverError, DriverOptions, Router};
use crate::runtime::faults::{FaultLayer, FaultPlan, counts_file_name as faults_counts_file};
use crate::runtime::handshake::{Identity, Incarnation};
#[cfg(feature = "testing")]
use crate::runtime::memnet::MemNet;
use crate::runtime::node_loop::{self, Host, INBOX_INPUTS};
use crate::runtime::storage::{
    Disk, Durable, KvStore, Owner, Rows, StorageError, UserStore, digest_of,
};
use crate::runtime::tls::Security;
use crate::runtime::trace::Tracer;
use crate::runtime::transport::{self, CLIENT_ID_MIN, Input, Link, random_client_id};
use bytes::Bytes;
use imbl::OrdMap;
use replicore_model::master_slave::master_user::ClientEntry;
use replicore_model::master_slave::{
    AbortReason, ClientMsg, MasterServer, MasterState, Mode, Msg, Saved, SlaveServer, SlaveState,
};
use replicore_model::store::Store;
use replicore_model::store::{KvOp, Version};
use stateright::actor::{Actor, Id};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The master's node id; slaves are `1..=slaves`.
pub const MASTER_ID: u64 = 0;

/// The role a master's data directory records.
pub const ROLE_MASTER: &str = "master-slave/master";

/// The role a slave's data directory records.
pub const ROLE_SLAVE: &str = "master-slave/slave";

/// How much longer than an update's own timeout a caller waits for its answer.
pub const ANSWER_SLACK: Duration = Duration::from_secs(10);

/// How long a caller waits for the outcome of an update in `mode`: its two-phase timeout,
/// if any, plus [`ANSWER_SLACK`].
pub fn answer_wait(mode: Mode) -> Duration {
    match mode {
        Mode::OnePhase => ANSWER_SLACK,
        Mode::TwoPhase { timeout_ms } => Duration::from_millis(timeout_ms) + ANSWER_SLACK,
    }
}

fn id(n: u64) -> Id {
    Id::from(n as usize)
}

/// How to run one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The cluster id (handshakes and data directories check it).
    pub cluster_id: u64,
    /// The cluster's pre-shared key.
    pub key: Vec<u8>,
    /// How its connections are secured (TLS with keys derived from `key` by default).
    pub security: Security,
    /// This node: [`MASTER_ID`] for the master, `1..=slaves` for a slave.
    pub node_id: u64,
    /// How many slaves the cluster has (the master's participants).
    pub slaves: u64,
    /// The master's address (slaves dial it).
    pub master_addr: String,
    /// The address this node listens on (port 0 picks a free port).
    pub listen: String,
    /// This node's data directory.
    pub data_dir: PathBuf,
    /// Create this node's store when the directory has none (the explicit bootstrap,
    /// `--init`); `false` (the default) refuses a directory without one, so a missing or
    /// mistyped directory never starts a fresh node (issue 18). An existing store is opened
    /// and checked either way.
    pub init: bool,
    /// The master's store was lost: create it anew and rebuild from the slaves before
    /// serving (`--recover`, issue 18; [`Saved::MasterLost`]). On a slave it rejoins empty
    /// and asks the master for everything, as a slave whose copy was found damaged does.
    /// Refused on a directory that holds a store.
    pub recover: bool,
    /// The master's heartbeat period range.
    pub heartbeat: Range<Duration>,
    /// How many committed steps the master remembers for deltas.
    pub history: usize,
    /// The largest frame, in bytes.
    pub max_frame_bytes: usize,
    /// Seeds the node's random choices (timer durations, its local client id); `None` draws
    /// from the OS. On an in-memory network with a paused clock a seeded run is reproducible.
    pub seed: Option<u64>,
    /// Faults to inject into the frames this node sends to other nodes (`crate::runtime::faults`);
    /// `None` (the default) injects nothing.
    pub faults: Option<FaultPlan>,
    /// Where to record this node's trace (`crate::runtime::trace`); `None` (the default) records
    /// nothing.
    pub trace_dir: Option<PathBuf>,
    /// Testing only (the `testing` feature): see [`DriverOptions::unsafe_send_before_save`].
    #[cfg(feature = "testing")]
    pub unsafe_send_before_save: bool,
    /// How many queued messages may share one durable write (group commit, see
    /// [`crate::runtime::driver`]); 1 turns it off.
    pub group_commit: usize,
}

impl NodeConfig {
    /// A config with defaults for everything but the ids, addresses and directory.
    pub fn new(
        cluster_id: u64,
        key: impl Into<Vec<u8>>,
        node_id: u64,
        slaves: u64,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        NodeConfig {
            cluster_id,
            key: key.into(),
            security: Security::default(),
            node_id,
            slaves,
            master_addr: String::new(),
            listen: "127.0.0.1:0".into(),
            data_dir: data_dir.into(),
            init: false,
            recover: false,
            heartbeat: Duration::from_millis(100)..Duration::from_millis(150),
            history: 256,
            max_frame_bytes: crate::runtime::codec::MAX_FRAME_BYTES_DEFAULT,
            seed: None,
            faults: None,
            trace_dir: None,
            #[cfg(feature = "testing")]
            unsafe_send_before_save: false,
            group_commit: crate::runtime::driver::GROUP_COMMIT_DEFAULT,
        }
    }
}

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
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
    Trace(#[from] crate::runtime::trace::TraceError),
    /// The node task panicked or was aborted.
    #[error("node task failed: {0}")]
    Task(String),
}

/// Why an update did not commit.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// A slave refused to prepare it (two-phase).
    #[error("aborted: a slave refused version {version}")]
    Refused {
        /// The version it had reserved.
        version: Version,
    },
    /// Not every slave voted before its timeout (two-phase).
    #[error("aborted: not every slave prepared version {version} before the timeout")]
    TimedOut {
        /// The version it had reserved.
        version: Version,
    },
    /// The client rolled it back.
    #[error("aborted: version {version} was rolled back")]
    RolledBack {
        /// The version it had reserved.
        version: Version,
    },
    /// The master restarted while it was undecided.
    #[error("aborted: the master restarted before deciding version {version}")]
    MasterRestarted {
        /// The version it had reserved.
        version: Version,
    },
    /// No answer came in time: the outcome is unknown (ask again with the same request).
    #[error("no answer within {0:?}; the outcome is unknown")]
    NoAnswer(Duration),
    /// Updates go to the master; this node is a slave.
    #[error("this node is a slave; send updates to the master")]
    NotMaster,
    /// The node stopped.
    #[error("the node stopped")]
    Stopped,
}

impl UpdateError {
    /// The error for an abort the master reported.
    pub fn aborted(reason: AbortReason, version: Version) -> Self {
        match reason {
            AbortReason::Refused => UpdateError::Refused { version },
            AbortReason::TimedOut => UpdateError::TimedOut { version },
            AbortReason::RolledBack => UpdateError::RolledBack { version },
            AbortReason::MasterRestarted => UpdateError::MasterRestarted { version },
        }
    }
}

/// The committed state a node exposes to reads. Cloning it is cheap (the data is
/// structurally shared).
#[derive(Clone, Debug, Default)]
pub struct View<S> {
    /// The committed version.
    pub version: Version,
    /// The committed data at `version` (never a prepared delta).
    pub data: S,
    /// The version of an undecided prepared (slave) or pending (master) two-phase update.
    pub prepared: Option<Version>,
}

/// Protocol 1's row part: the user layer's data, a row per key in the `data` table, and the
/// master's client ledger (`MasterUser::clients`), a row per client id in the `ledger`
/// table. Both are structurally shared, so a save diffs and writes only what the step
/// changed: the cost of an update is flat in the data set's size and in the client ids the
/// master has seen (`benches/ledger_cost.rs`).
#[derive(Clone, Debug, Default)]
pub struct SavedRows<S: Store> {
    /// The user layer's data.
    pub data: S,
    /// The master's client ledger (empty for a slave).
    pub clients: OrdMap<Id, ClientEntry<S>>,
}

impl<S: UserStore> Rows for SavedRows<S> {
    fn diff_rows(&self, last: &Self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.data.diff_rows(&last.data)
    }

    fn from_table(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        Ok(SavedRows {
            data: S::from_rows(rows)?,
            clients: OrdMap::new(),
        })
    }

    /// A row per client id: key the id's 8 bytes big-endian, value postcard of its entry.
    fn diff_ledger_rows(&self, last: &Self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        use imbl::ordmap::DiffItem;
        let key = |id: &Id| (usize::from(*id) as u64).to_be_bytes().to_vec();
        last.clients
            .diff(&self.clients)
            .map(|item| match item {
                DiffItem::Add(id, entry)
                | DiffItem::Update {
                    new: (id, entry), ..
                } => {
                    // A model type always encodes; an empty row would be refused at load.
                    (
                        key(id),
                        Some(postcard::to_allocvec(entry).unwrap_or_default()),
                    )
                }
                DiffItem::Remove(id, _) => (key(id), None),
            })
            .collect()
    }

    fn with_ledger_rows(
        mut self,
        rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, String> {
        for (key, value) in rows {
            let id: [u8; 8] = key
                .as_slice()
                .try_into()
                .map_err(|_| format!("a ledger key of {} bytes, expected 8", key.len()))?;
            let id = usize::try_from(u64::from_be_bytes(id))
                .map_err(|_| "a client id beyond this machine's word".to_string())?;
            let entry = postcard::from_bytes(&value)
                .map_err(|e| format!("the entry of client {id} does not decode ({e})"))?;
            self.clients.insert(Id::from(id), entry);
        }
        Ok(self)
    }
}

/// Protocol 1's storage in the runtime's database: the user layer's data and the master's
/// client ledger row by row ([`SavedRows`]), the rest in one row.
impl<S: UserStore> Durable for Saved<S> {
    type Data = SavedRows<S>;

    fn split(mut self) -> (SavedRows<S>, Self) {
        let rows = match &mut self {
            Saved::Master(m) => SavedRows {
                data: std::mem::take(&mut m.user.data),
                clients: std::mem::take(&mut m.user.clients),
            },
            Saved::Slave(s) => SavedRows {
                data: std::mem::take(&mut s.user.data),
                clients: OrdMap::new(),
            },
            Saved::MasterLost => SavedRows {
                data: S::default(),
                clients: OrdMap::new(),
            },
        };
        (rows, self)
    }

    fn join(mut self, rows: SavedRows<S>) -> Self {
        match &mut self {
            Saved::Master(m) => {
                m.user.data = rows.data;
                // A store written before the ledger had rows of its own keeps it in the
                // saved row: merged here (the rows win), and written out as rows by the
                // next save (`Disk::save`).
                let legacy = std::mem::take(&mut m.user.clients);
                m.user.clients = rows.clients.union(legacy);
            }
            Saved::Slave(s) => s.user.data = rows.data,
            Saved::MasterLost => {}
        }
        self
    }

    fn version(&self) -> u64 {
        Saved::version(self)
    }

    fn after_damage(node: u64) -> Option<Self> {
        Saved::after_damage(node == MASTER_ID)
    }
}

/// How a node reaches its peers.
enum Wiring<S: UserStore> {
    /// TCP: listen, and (slaves) dial the master.
    Tcp,
    /// An in-memory network shared by the nodes of one process (the `testing` feature).
    #[cfg(feature = "testing")]
    Memory(Arc<MemNet<Msg<S>>>),
    #[cfg(not(feature = "testing"))]
    #[allow(dead_code)]
    Never(std::convert::Infallible, PhantomData<S>),
}

impl<S: UserStore> Wiring<S> {
    /// Whether the node is on the in-memory network.
    fn in_memory(&self) -> bool {
        !matches!(self, Wiring::Tcp)
    }
}

/// What the node loop needs to know about an actor's state.
trait Inspect: Actor {
    type Data: UserStore;
    fn view(state: &Self::State) -> (Version, Option<Version>, &Self::Data);
    fn next_req(state: &Self::State, client: Id) -> Option<u64>;
    /// Its metrics and event log (`crate::master_slave::observe`).
    fn observer(&self, node_id: u64) -> Box<dyn crate::runtime::metrics::Observer<Self>>;
}

impl<S: UserStore> Inspect for MasterServer<S> {
    type Data = S;
    fn view(state: &MasterState<S>) -> (Version, Option<Version>, &S) {
        (
            state.user.version,
            state.pending.as_ref().map(|p| p.step.new),
            &state.user.data,
        )
    }
    fn next_req(state: &MasterState<S>, client: Id) -> Option<u64> {
        Some(state.user.clients.get(&client).map_or(0, |c| c.next_req))
    }
    fn observer(&self, node_id: u64) -> Box<dyn crate::runtime::metrics::Observer<Self>> {
        Box::new(crate::master_slave::observe::MasterObserver::new(
            node_id,
            &self.slaves,
        ))
    }
}

impl<S: UserStore> Inspect for SlaveServer<S> {
    type Data = S;
    fn view(state: &SlaveState<S>) -> (Version, Option<Version>, &S) {
        (
            state.user.version,
            state.user.prepared.as_ref().map(|p| p.new),
            &state.user.data,
        )
    }
    fn next_req(_: &SlaveState<S>, _: Id) -> Option<u64> {
        None
    }
    fn observer(&self, _: u64) -> Box<dyn crate::runtime::metrics::Observer<Self>> {
        Box::new(crate::master_slave::observe::SlaveObserver)
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Version, UpdateError>>>>>;

fn lock(
    w: &Waiters,
) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Version, UpdateError>>>> {
    // Nothing panics while holding it; recover the map if something did.
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// The master's in-process client: a client id of its own whose replies come back through
/// the router.
struct LocalClient {
    id: Id,
    next_req: AtomicU64,
    waiters: Waiters,
}

/// A running node. Dropping it stops it; [`Node::shutdown`] stops it and waits.
///
/// ```
/// use replicore_runtime::master_slave::node::{Node, NodeConfig};
/// use replicore_runtime::Mode;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// // A master with one slave, each created here (`init`).
/// let mut cfg = NodeConfig::new(1, "secret", 0, 1, dir.path().join("m"));
/// cfg.init = true;
/// let master = Node::start(cfg).await?;
/// let mut cfg = NodeConfig::new(1, "secret", 1, 1, dir.path().join("s1"));
/// cfg.init = true;
/// cfg.master_addr = master.local_addr().to_string();
/// let slave = Node::start(cfg).await?;
///
/// let v1 = master.put("greeting", "hello", Mode::OnePhase).await?;
/// // The slave converges: watch its committed versions. Once it holds v1 it is connected;
/// // a two-phase update needs that (a prepare a slave never received aborts at the timeout,
/// // while a lost announcement is repaired by the heartbeat).
/// let mut versions = slave.versions();
/// versions.wait_for(|v| *v >= v1).await?;
/// let v2 = master.put("answer", "42", Mode::TwoPhase { timeout_ms: 5_000 }).await?;
/// assert!(v2 > v1);
/// versions.wait_for(|v| *v >= v2).await?;
/// assert_eq!(slave.get("answer").as_deref(), Some(&b"42"[..]));
///
/// slave.shutdown().await?;
/// master.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct Node<S: UserStore = KvStore> {
    node_id: u64,
    local_addr: SocketAddr,
    inbox: mpsc::Sender<Input<Msg<S>>>,
    view: watch::Receiver<View<S>>,
    versions: watch::Receiver<Version>,
    client: Option<Arc<LocalClient>>,
    cancel: CancellationToken,
    main: Option<JoinHandle<Result<(), DriverError>>>,
    /// Its connections (readiness: whether a slave is connected to the master).
    router: Router,
    store: PhantomData<S>,
}

impl<S: UserStore> Drop for Node<S> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl<S: UserStore> Node<S> {
    /// Starts the node `config.node_id` names: the master for [`MASTER_ID`], else a slave.
    /// Opens (or creates) its data directory, binds its listen address, restores its saved
    /// state and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        Self::start_wired(config, Wiring::Tcp).await
    }

    /// Starts the node on an in-memory network instead of TCP (tests, simulations; the
    /// `testing` feature): no socket is bound, `config.listen` and `config.master_addr` are
    /// ignored, and every other node attached to `net` is its peer.
    #[cfg(feature = "testing")]
    pub async fn start_in(
        config: NodeConfig,
        net: &Arc<MemNet<Msg<S>>>,
    ) -> Result<Self, NodeError> {
        Self::start_wired(config, Wiring::Memory(net.clone())).await
    }

    async fn start_wired(config: NodeConfig, wiring: Wiring<S>) -> Result<Self, NodeError> {
        if config.node_id == MASTER_ID {
            let actor = MasterServer::<S> {
                slaves: (1..=config.slaves).map(id).collect(),
                history_bound: config.history,
                heartbeat: config.heartbeat.clone(),
                mutant: None,
                store: PhantomData,
            };
            Self::launch(actor, config, wiring).await
        } else {
            if config.node_id > config.slaves {
                return Err(NodeError::Config("a slave's node id must be in 1..=slaves"));
            }
            if config.master_addr.is_empty() && matches!(wiring, Wiring::Tcp) {
                return Err(NodeError::Config("a slave needs the master's address"));
            }
            let actor = SlaveServer::<S> {
                master: id(MASTER_ID),
                mutant: None,
                store: PhantomData,
            };
            Self::launch(actor, config, wiring).await
        }
    }

    async fn launch<A>(actor: A, config: NodeConfig, wiring: Wiring<S>) -> Result<Self, NodeError>
    where
        A: Actor<Msg = Msg<S>, Storage = Saved<S>> + Inspect<Data = S> + Send + 'static,
        A::State: Send + Sync,
        A::Timer: Send + Sync + serde::Serialize,
        A::Random: Send + Sync,
    {
        // Bind first: a busy port fails before the data directory is touched.
        let listener =
            match wiring {
                Wiring::Tcp => Some(TcpListener::bind(&config.listen).await.map_err(|source| {
                    NodeError::Bind {
                        addr: config.listen.clone(),
                        source,
                    }
                })?),
                _ => None,
            };
        let local_addr = match &listener {
            Some(l) => l.local_addr().map_err(|source| NodeError::Bind {
                addr: config.listen.clone(),
                source,
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        if let Some(plan) = &config.faults {
            plan.validate().map_err(NodeError::Faults)?;
        }
        // On the in-memory network storage runs inline (see `DriverOptions::inline_saves`).
        let inline = wiring.in_memory();
        let identity = Owner::new(
            config.cluster_id,
            config.node_id,
            if config.node_id == MASTER_ID {
                ROLE_MASTER
            } else {
                ROLE_SLAVE
            },
        );
        let (dir, init, recover) = (config.data_dir.clone(), config.init, config.recover);
        let open = move || {
            if recover {
                Disk::create_lost::<Saved<S>>(&dir, &identity)
            } else {
                Disk::open_for::<Saved<S>>(&dir, &identity, init)
            }
        };
        let disk = if inline {
            open()?
        } else {
            tokio::task::spawn_blocking(open)
                .await
                .map_err(|e| NodeError::Task(e.to_string()))??
        };
        let incarnation = incarnation_of(&disk, config.node_id)?;
        let options = DriverOptions {
            max_frame_bytes: config.max_frame_bytes,
            seed: config.seed,
            inline_saves: inline,
            #[cfg(feature = "testing")]
            unsafe_send_before_save: config.unsafe_send_before_save,
            group_commit: config.group_commit,
        };
        let faults = config
            .faults
            .clone()
            .map(|plan| Arc::new(FaultLayer::new(plan, config.node_id, config.slaves)));
        let router = match &faults {
            Some(f) => Router::with_faults(f.clone()),
            None => Router::default(),
        };
        let tracer = match &config.trace_dir {
            Some(dir) => {
                let meta = serde_json::to_value(NodeMeta {
                    slaves: config.slaves,
                    history: config.history,
                })
                .unwrap_or_default();
                Some(Tracer::create(dir, config.node_id, meta)?)
            }
            None => None,
        };
        let counts_file = match (&config.trace_dir, &tracer, &faults) {
            (Some(dir), Some(t), Some(_)) => {
                Some(dir.join(faults_counts_file(config.node_id, t.incarnation())))
            }
            _ => None,
        };
        let observer = actor.observer(config.node_id);
        let mut driver = Driver::start_traced(
            actor,
            id(config.node_id),
            disk,
            router.clone(),
            options,
            tracer,
        )
        .await?;
        driver.set_observer(observer);
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_INPUTS);
        let cancel = CancellationToken::new();
        let link = Link {
            identity: Identity::new(config.cluster_id, config.node_id, config.key.clone())
                .with_security(config.security.clone())
                .with_incarnation(incarnation),
            router: router.clone(),
            inbox: inbox_tx.clone(),
            max_frame_bytes: config.max_frame_bytes,
            cancel: cancel.clone(),
        };
        let (version, prepared, data) = A::view(driver.state());
        let (view_tx, view_rx) = watch::channel(View {
            version,
            prepared,
            data: data.clone(),
        });
        let (versions_tx, versions_rx) = watch::channel(version);
        tracing::info!(node = config.node_id, %local_addr, version, "node started");
        if let Some(f) = &faults {
            // Successive incarnations of a node resume from growing versions: fresh draws.
            f.reseed(version);
            tracing::warn!(
                node = config.node_id,
                "injecting faults into frames between nodes"
            );
            if let Some(path) = counts_file {
                tokio::spawn(write_fault_counts(f.clone(), path, cancel.clone()));
            }
        }

        let client = if config.node_id == MASTER_ID {
            let local_id = id(match config.seed {
                // Any fixed id far from node ids will do; derive it from the seed.
                Some(seed) => CLIENT_ID_MIN + (seed >> 4),
                None => random_client_id(),
            });
            // Continue the id's numbering if the master's ledger knows it (a restart).
            let next_req = A::next_req(driver.state(), local_id).unwrap_or(0);
            let local = Arc::new(LocalClient {
                id: local_id,
                next_req: AtomicU64::new(next_req),
                waiters: Waiters::default(),
            });
            let (tx, rx) = mpsc::channel(crate::runtime::driver::PEER_QUEUE_FRAMES);
            router.register(local.id, tx);
            tokio::spawn(dispatch_replies::<S>(
                rx,
                local.waiters.clone(),
                cancel.clone(),
            ));
            Some(local)
        } else {
            if listener.is_some() {
                tokio::spawn(transport::dial_loop(
                    config.master_addr.clone(),
                    link.clone(),
                ));
            }
            None
        };
        match (listener, &wiring) {
            (Some(listener), _) => {
                tokio::spawn(transport::accept_loop(listener, link));
            }
            #[cfg(feature = "testing")]
            (None, Wiring::Memory(net)) => {
                net.attach(config.node_id, inbox_tx.clone(), router.clone())
            }
            #[cfg(not(feature = "testing"))]
            (None, Wiring::Never(never, _)) => match *never {},
            (None, Wiring::Tcp) => unreachable!("TCP wiring always binds a listener"),
        }
        let mut host = Published {
            node_id: config.node_id,
            view: view_tx,
            versions: versions_tx,
        };
        let node_cancel = cancel.clone();
        let node_id = config.node_id;
        let main = tokio::spawn(async move {
            let (mut driver, mut inbox) = (driver, inbox_rx);
            node_loop::run(&mut driver, &mut inbox, &node_cancel, &mut host).await?;
            tracing::info!(node = node_id, "node stopped");
            Ok(())
        });
        Ok(Node {
            node_id: config.node_id,
            local_addr,
            inbox: inbox_tx,
            view: view_rx,
            versions: versions_rx,
            client,
            cancel,
            main: Some(main),
            router,
            store: PhantomData,
        })
    }

    /// Whether this node serves, for `/health` ([`crate::runtime::metrics::serve`]): its
    /// loop runs and, for a slave, it is connected to the master.
    pub fn readiness(&self) -> crate::runtime::metrics::Readiness {
        let (cancel, inbox, router) =
            (self.cancel.clone(), self.inbox.clone(), self.router.clone());
        let needs_master = self.node_id != MASTER_ID;
        Arc::new(move || {
            !cancel.is_cancelled()
                && !inbox.is_closed()
                && (!needs_master || router.is_connected(id(MASTER_ID)))
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The committed version now.
    pub fn version(&self) -> Version {
        *self.versions.borrow()
    }

    /// A stream of committed versions: `changed()` wakes on each new one.
    pub fn versions(&self) -> watch::Receiver<Version> {
        self.versions.clone()
    }

    /// A stream of committed states (version, data, prepared version): `changed()` wakes on
    /// each change. Intermediate states may be skipped, never reordered.
    pub fn views(&self) -> watch::Receiver<View<S>> {
        self.view.clone()
    }

    /// The committed state now (cheap: the data is structurally shared).
    pub fn view(&self) -> View<S> {
        self.view.borrow().clone()
    }

    /// Starts an update through this node (the master) and returns its ticket at once; the
    /// ticket's request number is what [`Node::rollback`] takes.
    pub async fn submit(&self, op: S::Op, mode: Mode) -> Result<Ticket, UpdateError> {
        let client = self.client.as_ref().ok_or(UpdateError::NotMaster)?;
        let req = client.next_req.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        lock(&client.waiters).insert(req, tx);
        let msg = Msg::Client(ClientMsg::Update { req, op, mode });
        self.inbox
            .send(Input::Msg(client.id, msg))
            .await
            .map_err(|_| UpdateError::Stopped)?;
        let wait = answer_wait(mode);
        Ok(Ticket {
            req,
            rx,
            wait,
            waiters: client.waiters.clone(),
        })
    }

    /// Performs an update and waits for its outcome: the committed version, or why not.
    pub async fn update(&self, op: S::Op, mode: Mode) -> Result<Version, UpdateError> {
        self.submit(op, mode).await?.outcome().await
    }

    /// Asks the master to roll back request `req` (claim 5): if still undecided it aborts,
    /// and its ticket answers [`UpdateError::RolledBack`].
    pub async fn rollback(&self, req: u64) -> Result<(), UpdateError> {
        let client = self.client.as_ref().ok_or(UpdateError::NotMaster)?;
        let msg = Msg::Client(ClientMsg::Rollback { req });
        self.inbox
            .send(Input::Msg(client.id, msg))
            .await
            .map_err(|_| UpdateError::Stopped)
    }

    /// Stops the node: the actor finishes its current step, connections close, the
    /// database is closed. Returns the error the node stopped on, if any.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.cancel.cancel();
        self.stopped().await
    }

    /// Waits until the node stops (by [`Node::shutdown`] elsewhere, or a fatal error).
    pub async fn stopped(&mut self) -> Result<(), NodeError> {
        // Await the handle in place: if this future is dropped (e.g. it lost a `select!`),
        // the handle stays, and a later `shutdown` still waits for the node to stop.
        let Some(handle) = self.main.as_mut() else {
            return Ok(());
        };
        let result = handle.await;
        self.main = None;
        result
            .map_err(|e| NodeError::Task(e.to_string()))?
            .map_err(NodeError::from)
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Node<KvStore> {
    /// Sets `key` to `value`.
    pub async fn put(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        mode: Mode,
    ) -> Result<Version, UpdateError> {
        self.update(KvOp::Put(key.into(), value.into()), mode).await
    }

    /// Removes `key`.
    pub async fn delete(&self, key: impl Into<String>, mode: Mode) -> Result<Version, UpdateError> {
        self.update(KvOp::Delete(key.into()), mode).await
    }

    /// Reads `key` from this node's committed data.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.view.borrow().data.read(&key.to_string()).cloned()
    }
}

/// An update in flight.
#[derive(Debug)]
pub struct Ticket {
    req: u64,
    rx: oneshot::Receiver<Result<Version, UpdateError>>,
    wait: Duration,
    waiters: Waiters,
}

impl Ticket {
    /// The request number (for [`Node::rollback`]).
    pub fn req(&self) -> u64 {
        self.req
    }

    /// Waits for the outcome.
    pub async fn outcome(self) -> Result<Version, UpdateError> {
        match tokio::time::timeout(self.wait, self.rx).await {
            Err(_) => {
                // Stop waiting for good: a late answer is dropped.
                lock(&self.waiters).remove(&self.req);
                Err(UpdateError::NoAnswer(self.wait))
            }
            Ok(Err(_)) => Err(UpdateError::Stopped),
            Ok(Ok(r)) => r,
        }
    }
}

async fn dispatch_replies<S: UserStore>(
    mut rx: mpsc::Receiver<Bytes>,
    waiters: Waiters,
    cancel: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            f = rx.recv() => match f { Some(f) => f, None => return },
        };
        // Encoded by this very process, so it decodes; a failure is ignored all the same.
        let reply =
            match crate::runtime::codec::decode::<crate::runtime::codec::Frame<Msg<S>>>(&frame) {
                Ok(
                    crate::runtime::codec::Frame::Actor(Msg::Client(reply))
                    | crate::runtime::codec::Frame::Traced(_, Msg::Client(reply)),
                ) => reply,
                _ => continue,
            };
        let (req, outcome) = match reply {
            ClientMsg::Committed { req, version } => (req, Ok(version)),
            ClientMsg::Aborted {
                req,
                version,
                reason,
            } => (req, Err(UpdateError::aborted(reason, version))),
            ClientMsg::Update { .. } | ClientMsg::Rollback { .. } => continue,
        };
        if let Some(tx) = lock(&waiters).remove(&req) {
            let _ = tx.send(outcome);
        }
    }
}

/// Rewrites the fault counters to `path` every [`FAULT_COUNTS_EVERY`] until the node stops,
/// then once more. A SIGKILL loses at most the last period's counts.
async fn write_fault_counts(faults: Arc<FaultLayer>, path: PathBuf, cancel: CancellationToken) {
    let write = |faults: &FaultLayer| {
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(&faults.counts()).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::debug!(error = %e, "fault counters not written");
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(FAULT_COUNTS_EVERY) => write(&faults),
        }
    }
    write(&faults);
}

/// How often a node with faults and a trace directory rewrites its fault counters.
pub const FAULT_COUNTS_EVERY: Duration = Duration::from_millis(200);

/// The status a node reports.
pub fn status_of<S: UserStore>(node_id: u64, view: (Version, Option<Version>, &S)) -> NodeStatus {
    let (version, prepared, data) = view;
    let digest = digest_of(data);
    NodeStatus {
        node_id,
        master: node_id == MASTER_ID,
        version,
        prepared,
        keys: data.key_count(),
        digest,
    }
}

/// The bytes of rows a scan page holds at most, well under the frame limit.
const SCAN_PAGE_BYTES: usize = 256 * 1024;

/// A page of `data`'s rows after `after`: at most `limit` rows and about
/// [`SCAN_PAGE_BYTES`] (one row at least).
fn scan_page<S: UserStore>(version: Version, data: &S, after: Option<&[u8]>, limit: u32) -> Reply {
    // One row more than the page, to tell whether more follow.
    let limit = limit.max(1) as usize;
    let page = data.scan_rows(after, limit + 1);
    let (mut rows, mut bytes) = (Vec::new(), 0);
    let mut rest = page.into_iter();
    for (k, v) in rest.by_ref() {
        bytes += k.len() + v.len();
        rows.push((k, v));
        if rows.len() >= limit || bytes >= SCAN_PAGE_BYTES {
            break;
        }
    }
    Reply::Rows {
        version,
        rows,
        more: rest.next().is_some(),
    }
}

/// Protocol 1 around the node loop: answers reads, status and request numbers, and
/// publishes each committed state.
struct Published<S: UserStore> {
    node_id: u64,
    view: watch::Sender<View<S>>,
    versions: watch::Sender<Version>,
}

impl<A> Host<A> for Published<<A as Inspect>::Data>
where
    A: Inspect,
{
    fn answer(&mut self, state: &A::State, src: Id, query: Query) -> Reply {
        match query {
            Query::Get { key } => {
                let (version, _, data) = A::view(state);
                Reply::Value {
                    version,
                    value: data.read_row(&key),
                }
            }
            Query::Status => Reply::Status(status_of(self.node_id, A::view(state))),
            Query::NextReq => A::next_req(state, src).map_or(Reply::Unsupported, Reply::NextReq),
            // Protocol 2's question; a protocol-1 node has no epoch.
            Query::Role => Reply::Unsupported,
            Query::Scan { after, limit } => {
                let (version, _, data) = A::view(state);
                scan_page(version, data, after.as_deref(), limit)
            }
        }
    }

    fn observe(&mut self, state: &A::State) {
        let (version, prepared, data) = A::view(state);
        self.view.send_if_modified(|v| {
            if v.version == version && v.prepared == prepared {
                return false;
            }
            *v = View {
                version,
                prepared,
                data: data.clone(),
            };
            true
        });
        self.versions.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
    }
}

/// The incarnation of its cluster this node belongs to (issue 18), as its store knows it.
/// A master that knows none and is not rebuilding a lost store draws one and saves it: its
/// cluster's creation (`--init`), or a store written before incarnations. A slave adopts
/// its master's at their first meeting; a master rebuilding a lost store adopts its slaves'.
/// Either way it is saved before the connection that brought it is accepted, and a node
/// of another creation of the cluster is refused from then on.
fn incarnation_of(disk: &Disk, node_id: u64) -> Result<Incarnation, StorageError> {
    let known = disk.incarnation()?;
    let rebuilding = matches!(disk.discarded(), Some(StorageError::Recreated { .. }));
    let save = {
        let disk = disk.clone();
        move |n| disk.set_incarnation(n).map_err(|e| e.to_string())
    };
    if node_id != MASTER_ID {
        return Ok(Incarnation::adopting(known, |peer| peer == MASTER_ID, save));
    }
    if known == 0 && !rebuilding {
        let drawn = rand::random::<u64>().max(1);
        disk.set_incarnation(drawn)?;
        return Ok(Incarnation::fixed(drawn));
    }
    Ok(Incarnation::adopting(
        known,
        |peer| peer != MASTER_ID && peer < CLIENT_ID_MIN,
        save,
    ))
}
