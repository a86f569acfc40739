//! One stage-sync peer: the model's `Peer` actor over TCP, its redb store, its local user.

use crate::runtime::codec::{self, Frame, MAX_FRAME_BYTES_DEFAULT};
use crate::runtime::driver::Router;
use crate::runtime::faults::{FaultLayer, FaultPlan};
use crate::runtime::handshake::Identity;
use crate::runtime::transport::{self, Input, Link, TransportError};
use redb::{Database, ReadableTable, TableDefinition};
use replicore_model::stage_sync::msg::{OpId, PeerId};
use replicore_model::stage_sync::{Edit, Ordering, Peer, PeerState, StageMsg};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The document's values at runtime.
pub type Value = String;
/// A peer's state at runtime.
pub type State = PeerState<Value>;
/// A message at runtime.
pub type Msg = StageMsg<Value>;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("stage");

/// The format marker of a stage-sync database.
pub const FORMAT: &[u8] = b"replicore-stage-1";

/// The database file inside a peer's data directory.
pub const FILE_NAME: &str = "stage.redb";

/// How often a peer re-sends its unstable operations.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(250);

/// The most peers of one group: peer ids are actor ids, and client ids sit above them.
pub const MAX_PEERS: usize = 64;

/// The actor id the runtime gives a user of this process ([`PeerHandle::edit`]).
const LOCAL_USER: usize = usize::MAX;

/// A failure of a stage-sync peer.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened or used (fatal: the peer stops).
    #[error("database {path}: {detail}")]
    Db {
        /// The file.
        path: PathBuf,
        /// The cause.
        detail: String,
    },
    /// The directory holds another peer's data or another kind of data.
    #[error("{path} holds {found}, not stage-sync peer {expected}")]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What it holds.
        found: String,
        /// The peer asked for.
        expected: PeerId,
    },
    /// A bad configuration.
    #[error("{0}")]
    Config(String),
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Connecting to a peer, or its handshake, failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer stopped, or a connection closed before the answer.
    #[error("{0}")]
    Closed(String),
}

/// One peer's durable store.
struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    fn dberr(&self, e: &dyn std::fmt::Display) -> StageError {
        StageError::Db {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// Opens (or creates) peer `id`'s store in `dir` and loads its saved state.
    fn open(dir: &Path, id: PeerId) -> Result<(Store, Option<State>), StageError> {
        std::fs::create_dir_all(dir).map_err(|source| StageError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| StageError::Db {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let store = Store { db, path };
        let txn = store.db.begin_write().map_err(|e| store.dberr(&e))?;
        let saved = {
            let mut t = txn.open_table(TABLE).map_err(|e| store.dberr(&e))?;
            let format = t
                .get("format")
                .map_err(|e| store.dberr(&e))?
                .map(|v| v.value().to_vec());
            let peer = t
                .get("peer")
                .map_err(|e| store.dberr(&e))?
                .map(|v| v.value().to_vec());
            match (format, peer) {
                (None, _) => {
                    t.insert("format", FORMAT).map_err(|e| store.dberr(&e))?;
                    t.insert("peer", &id.to_be_bytes()[..])
                        .map_err(|e| store.dberr(&e))?;
                    None
                }
                (Some(f), Some(p)) if f == FORMAT && p == id.to_be_bytes() => {
                    match t.get("state").map_err(|e| store.dberr(&e))? {
                        Some(v) => Some(
                            postcard::from_bytes::<State>(v.value())
                                .map_err(|e| store.dberr(&format!("corrupt peer state: {e}")))?,
                        ),
                        None => None,
                    }
                }
                (Some(f), p) => {
                    let found = if f == FORMAT {
                        let mut b = [0u8; 8];
                        let p = p.unwrap_or_default();
                        b.copy_from_slice(p.get(..8).unwrap_or(&[0; 8]));
                        format!("peer {}", u64::from_be_bytes(b))
                    } else {
                        "another kind of data".to_string()
                    };
                    return Err(StageError::Foreign {
                        path: dir.to_path_buf(),
                        found,
                        expected: id,
                    });
                }
            }
        };
        txn.commit().map_err(|e| store.dberr(&e))?;
        Ok((store, saved))
    }

    /// Replaces the saved state, durably (fsync) before it returns.
    fn save(&self, state: &State) -> Result<(), StageError> {
        let bytes = postcard::to_allocvec(state).map_err(|e| self.dberr(&e))?;
        let mut txn = self.db.begin_write().map_err(|e| self.dberr(&e))?;
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut t = txn.open_table(TABLE).map_err(|e| self.dberr(&e))?;
            t.insert("state", &bytes[..]).map_err(|e| self.dberr(&e))?;
        }
        txn.commit().map_err(|e| self.dberr(&e))
    }
}

/// How to run one peer.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// This peer's id: its index in `addrs`, and its priority (claim 5).
    pub id: PeerId,
    /// Every peer's address, in id order, this one's included (claim 4).
    pub addrs: Vec<String>,
    /// Listen here instead of `addrs[id]` (e.g. port 0 in tests).
    pub listen: Option<String>,
    /// The group's cluster id.
    pub cluster_id: u64,
    /// The group's pre-shared key.
    pub key: Vec<u8>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Faults injected on the links to other peers (tests).
    pub faults: Option<FaultPlan>,
}

/// What a user sees of a peer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct View {
    /// The current stage (operations executed, the truncated ones included).
    pub stage: u32,
    /// The stability line.
    pub stable: u32,
    /// Messages held in the waiting list and redo queue.
    pub held: u32,
    /// The document.
    pub items: Vec<Value>,
}

impl View {
    fn of(st: &State) -> View {
        View {
            stage: st.stage(),
            stable: st.stable(),
            held: (st.waiting.len() + st.redo.len()) as u32,
            items: st.doc.items.clone(),
        }
    }
}

enum Request {
    Edit(
        Edit<Value>,
        oneshot::Sender<Result<(OpId, u32), StageError>>,
    ),
    View(oneshot::Sender<View>),
}

/// A running peer.
pub struct PeerHandle {
    requests: mpsc::Sender<Request>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StageError>>,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
}

/// This process's user of a running peer; cheap to clone, usable from any task.
#[derive(Clone)]
pub struct LocalUser {
    requests: mpsc::Sender<Request>,
}

impl LocalUser {
    /// Executes a user's edit on the peer (claim 1): returns the new operation and its stage
    /// once it is saved and its message sent.
    pub async fn edit(&self, edit: Edit<Value>) -> Result<(OpId, u32), StageError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Edit(edit, tx))
            .await
            .map_err(|_| StageError::Closed("the peer stopped".into()))?;
        rx.await
            .map_err(|_| StageError::Closed("the peer stopped".into()))?
    }

    /// The peer's document and stages.
    pub async fn view(&self) -> Result<View, StageError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::View(tx))
            .await
            .map_err(|_| StageError::Closed("the peer stopped".into()))?;
        rx.await
            .map_err(|_| StageError::Closed("the peer stopped".into()))
    }
}

impl PeerHandle {
    /// A user of this peer.
    pub fn user(&self) -> LocalUser {
        LocalUser {
            requests: self.requests.clone(),
        }
    }

    /// Executes a user's edit (see [`LocalUser::edit`]).
    pub async fn edit(&self, edit: Edit<Value>) -> Result<(OpId, u32), StageError> {
        self.user().edit(edit).await
    }

    /// The peer's document and stages.
    pub async fn view(&self) -> Result<View, StageError> {
        self.user().view().await
    }

    /// Stops the peer and waits for it; returns its error if it failed.
    pub async fn shutdown(self) -> Result<(), StageError> {
        self.cancel.cancel();
        self.task
            .await
            .map_err(|e| StageError::Closed(format!("peer task: {e}")))?
    }

    /// Runs until the peer stops on its own (a fatal error) or `stop` resolves.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), StageError> {
        let cancel = self.cancel.clone();
        let mut task = self.task;
        tokio::select! {
            r = &mut task => r.map_err(|e| StageError::Closed(format!("peer task: {e}")))?,
            () = stop => {
                cancel.cancel();
                task.await.map_err(|e| StageError::Closed(format!("peer task: {e}")))?
            }
        }
    }
}

/// Starts peer `cfg.id`: opens its store, listens, dials the peers with a lower id, and runs
/// the actor until shut down.
pub async fn spawn(cfg: PeerConfig) -> Result<PeerHandle, StageError> {
    let n = cfg.addrs.len();
    if !(2..=MAX_PEERS).contains(&n) {
        return Err(StageError::Config(format!(
            "a group has 2 to {MAX_PEERS} peers, not {n}"
        )));
    }
    if cfg.id as usize >= n {
        return Err(StageError::Config(format!(
            "peer id {} is out of range (0 to {})",
            cfg.id,
            n - 1
        )));
    }
    let (store, saved) = Store::open(&cfg.data_dir, cfg.id)?;
    let listen = cfg
        .listen
        .clone()
        .unwrap_or_else(|| cfg.addrs[cfg.id as usize].clone());
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|source| StageError::Listen {
            addr: listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StageError::Listen {
        addr: listen,
        source,
    })?;
    let router = match &cfg.faults {
        Some(plan) => Router::with_faults(Arc::new(FaultLayer::new(
            plan.clone(),
            cfg.id,
            n as u64 - 1,
        ))),
        None => Router::default(),
    };
    let cancel = CancellationToken::new();
    let (inbox, inbox_rx) = mpsc::channel::<Input<Msg>>(1024);
    let link = Link {
        identity: Identity {
            cluster_id: cfg.cluster_id,
            node_id: cfg.id,
            key: cfg.key.clone(),
        },
        router: router.clone(),
        inbox,
        max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
        cancel: cancel.clone(),
    };
    tokio::spawn(transport::accept_loop(listener, link.clone()));
    for a in cfg.addrs.iter().take(cfg.id as usize) {
        tokio::spawn(transport::dial_loop(a.clone(), link.clone()));
    }
    let actor = Peer {
        peers: n,
        edits: vec![],
        ordering: Ordering::Aged,
        stability: true,
        resend: true,
        save: true,
        mutant: None,
    };
    let mut out = Out::new();
    let state = actor.on_start(Id::from(cfg.id as usize), &saved, &mut out);
    let (requests, requests_rx) = mpsc::channel(64);
    let run = Running {
        me: Id::from(cfg.id as usize),
        actor,
        state,
        store,
        router,
        max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
    };
    let task = tokio::spawn(run.run(inbox_rx, requests_rx, cancel.clone()));
    Ok(PeerHandle {
        requests,
        cancel,
        task,
        addr,
    })
}

struct Running {
    me: Id,
    actor: Peer<Value>,
    state: State,
    store: Store,
    router: Router,
    max_frame_bytes: usize,
}

impl Running {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Input<Msg>>,
        mut requests: mpsc::Receiver<Request>,
        cancel: CancellationToken,
    ) -> Result<(), StageError> {
        let mut resend = tokio::time::interval(RESEND_INTERVAL);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                Some(input) = inbox.recv() => {
                    let (src, msg) = match input {
                        Input::Msg(src, msg) | Input::Traced(src, _, msg) => (src, msg),
                        // Protocol 1's runtime queries; this peer answers none.
                        Input::Query(..) => continue,
                    };
                    self.step(|a, me, st, o| a.on_msg(me, st, src, msg, o))?;
                }
                Some(req) = requests.recv() => match req {
                    Request::Edit(edit, reply) => {
                        let replies = self.step(|a, me, st, o| {
                            a.on_msg(me, st, Id::from(LOCAL_USER), StageMsg::Edit(edit), o)
                        });
                        let answer = match replies {
                            Ok(rs) => rs
                                .into_iter()
                                .find_map(|m| match m {
                                    StageMsg::Edited { id, stage } => Some((id, stage)),
                                    _ => None,
                                })
                                .ok_or_else(|| StageError::Closed("no answer".into())),
                            Err(e) => {
                                let _ = reply.send(Err(StageError::Closed(e.to_string())));
                                return Err(e);
                            }
                        };
                        let _ = reply.send(answer);
                    }
                    Request::View(reply) => {
                        let _ = reply.send(View::of(&self.state));
                    }
                },
                _ = resend.tick() => {
                    self.step(|a, me, st, o| {
                        a.on_timeout(me, st, &replicore_model::stage_sync::Timer::Resend, o)
                    })?;
                }
            }
        }
    }

    /// Runs one actor step: saves durably first, then sends; returns the messages addressed
    /// to this process's user.
    fn step(
        &mut self,
        f: impl FnOnce(&Peer<Value>, Id, &mut Cow<State>, &mut Out<Peer<Value>>),
    ) -> Result<Vec<Msg>, StageError> {
        let mut cow = Cow::Borrowed(&self.state);
        let mut out = Out::new();
        f(&self.actor, self.me, &mut cow, &mut out);
        let next = match cow {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        };
        let mut saved = None;
        let mut sends = Vec::new();
        for c in out {
            match c {
                Command::Save(s) => saved = Some(s),
                Command::Send(dst, m) => sends.push((dst, m)),
                // The resend interval is fixed; the model's edit timer is not used here.
                Command::SetTimer(..) | Command::CancelTimer(..) | Command::ChooseRandom(..) => {}
            }
        }
        if let Some(s) = saved {
            self.store.save(&s)?;
        }
        if let Some(s) = next {
            self.state = s;
        }
        let mut local = Vec::new();
        for (dst, m) in sends {
            if usize::from(dst) == LOCAL_USER {
                local.push(m);
                continue;
            }
            match codec::encode(&Frame::Actor(m), self.max_frame_bytes) {
                Ok(bytes) => {
                    self.router.send(dst, bytes);
                }
                Err(e) => tracing::error!(%dst, error = %e, "message not sent"),
            }
        }
        Ok(local)
    }
}
