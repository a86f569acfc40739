//! One stage-sync peer: the model's `Peer` actor on the runtime's driver and node loop, over
//! TCP and the runtime's storage, and its local user.

use crate::runtime::codec::{self, Frame, MAX_FRAME_BYTES_DEFAULT};
use crate::runtime::conformance::{self, ConformanceError, Replayed};
use crate::runtime::driver::{Driver, DriverError, DriverOptions, PEER_QUEUE_FRAMES, Router};
use crate::runtime::faults::{FaultLayer, FaultPlan};
use crate::runtime::handshake::Identity;
use crate::runtime::node_loop::{self, Host, INBOX_INPUTS};
use crate::runtime::storage::{Disk, Durable, Owner, Rows, StorageError, map_rows};
use crate::runtime::trace::{TraceError, Tracer};
use crate::runtime::transport::{self, Input, Link, TransportError};
use bytes::Bytes;
use replicore_model::stage_sync::msg::{OpId, PeerId};
use replicore_model::stage_sync::peer::Entry;
use replicore_model::stage_sync::{Edit, Ordering, Peer, PeerState, StageMsg, Sync, Timer};
use stateright::actor::Id;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The document's values at runtime.
pub type Value = String;
/// A peer's state at runtime.
pub type State = PeerState<Value>;
/// A message at runtime.
pub type Msg = StageMsg<Value>;

/// The most peers of one group: peer ids are actor ids, and client ids sit above them.
pub const MAX_PEERS: usize = 64;

/// The role a peer's data directory records.
pub const ROLE: &str = "stage-sync/peer";

/// The actor id the runtime gives a user of this process ([`LocalUser`]).
const LOCAL_USER: usize = usize::MAX;

/// A failure of a stage-sync peer.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The data directory could not be opened (another peer's, or not ours).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The trace could not be created.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The driver stopped on a fatal error (a save could not be made durable).
    #[error(transparent)]
    Driver(#[from] DriverError),
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

/// The row part of a peer's saved state: the journal by stage and the held messages by
/// operation, so a step writes the entries it changed. The document, the base and the
/// reports stay in the one `saved` row: the document is an ordered list, so rows by
/// position would be rewritten from the first changed position anyway.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct StageRows {
    journal: BTreeMap<u32, Entry<Value>>,
    waiting: BTreeMap<OpId, Sync<Value>>,
    redo: BTreeMap<OpId, Sync<Value>>,
}

const JOURNAL: u8 = b'j';
const WAITING: u8 = b'w';
const REDO: u8 = b'r';

fn op_key(id: &OpId) -> Vec<u8> {
    // An operation id of the model always encodes.
    postcard::to_allocvec(id).unwrap_or_default()
}

impl Rows for StageRows {
    fn diff_rows(&self, last: &Self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut rows = map_rows(JOURNAL, &self.journal, &last.journal, |s| {
            s.to_be_bytes().to_vec()
        });
        rows.extend(map_rows(WAITING, &self.waiting, &last.waiting, op_key));
        rows.extend(map_rows(REDO, &self.redo, &last.redo, op_key));
        rows
    }

    fn from_table(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        let mut out = StageRows::default();
        for (k, v) in rows {
            let (tag, key) = k.split_first().ok_or("an empty row key")?;
            match *tag {
                JOURNAL => {
                    let stage = u32::from_be_bytes(
                        key.try_into().map_err(|_| "a journal key is not a u32")?,
                    );
                    let entry = postcard::from_bytes(&v).map_err(|e| format!("journal: {e}"))?;
                    out.journal.insert(stage, entry);
                }
                WAITING | REDO => {
                    let id = postcard::from_bytes(key).map_err(|e| format!("op id: {e}"))?;
                    let sync = postcard::from_bytes(&v).map_err(|e| format!("held: {e}"))?;
                    if *tag == WAITING {
                        out.waiting.insert(id, sync);
                    } else {
                        out.redo.insert(id, sync);
                    }
                }
                other => return Err(format!("unknown row tag {other}")),
            }
        }
        Ok(out)
    }
}

impl Durable for State {
    type Data = StageRows;

    fn split(mut self) -> (StageRows, Self) {
        let first = self.base.stage + 1;
        let journal = std::mem::take(&mut self.journal)
            .into_iter()
            .enumerate()
            .map(|(i, e)| (first + i as u32, e))
            .collect();
        let rows = StageRows {
            journal,
            waiting: std::mem::take(&mut self.waiting),
            redo: std::mem::take(&mut self.redo),
        };
        (rows, self)
    }

    fn join(mut self, rows: StageRows) -> Self {
        self.journal = rows.journal.into_values().collect();
        self.waiting = rows.waiting;
        self.redo = rows.redo;
        self
    }

    fn version(&self) -> u64 {
        u64::from(self.stage())
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
    /// How its connections are secured.
    pub security: crate::runtime::tls::Security,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Create the store when the directory has none (the explicit bootstrap, `--init`);
    /// otherwise a directory without one is refused (issue 18).
    pub init: bool,
    /// Faults injected on the links to other peers (tests).
    pub faults: Option<FaultPlan>,
    /// Where to record this peer's trace (`crate::runtime::trace`); `None` records nothing.
    pub trace_dir: Option<PathBuf>,
}

/// What a peer records in its trace header: enough to rebuild its actor.
#[derive(Clone, Debug, serde::Deserialize, Eq, PartialEq, serde::Serialize)]
pub struct TraceMeta {
    /// How many peers the group has.
    pub peers: usize,
}

/// The actor of a peer of a group of `peers`.
fn peer_actor(peers: usize) -> Peer<Value> {
    Peer {
        peers,
        edits: vec![],
        ordering: Ordering::Aged,
        stability: true,
        resend: true,
        save: true,
        mutant: None,
    }
}

/// Replays the traces in `dir` through each peer's actor
/// ([`crate::runtime::conformance::replay_checked`]) and checks the model's properties on the
/// run: on every state of every peer, that its document is its journal replayed, that it
/// holds no operation twice, that its journal is chained, and that it never loses an
/// operation it held (`props::none_lost`, by the peer's own history); on the peers' last
/// states, that peers holding the same operations have one journal and one document, and
/// that no peer's stability line is undone at another.
pub fn check_trace(dir: &std::path::Path) -> Result<Replayed, ConformanceError> {
    use replicore_model::stage_sync::model::props;
    let nodes = conformance::read_dir::<Msg, Timer, State>(dir)?;
    let mut ever_held: BTreeMap<u64, std::collections::BTreeSet<OpId>> = BTreeMap::new();
    let per_peer = |node: u64, state: &State| -> Result<(), String> {
        let held = props::held(state);
        let failed = if !props::data_is_replay_of(state) {
            Some(props::DATA_IS_REPLAY)
        } else if !props::at_most_once_of(state) {
            Some(props::AT_MOST_ONCE)
        } else if !props::journal_chained_of(state) {
            Some(props::CHAINED)
        } else {
            let ever = ever_held.entry(node).or_default();
            let now: std::collections::BTreeSet<OpId> = held.into_iter().collect();
            let lost = ever.iter().any(|id| !now.contains(id));
            ever.extend(now);
            lost.then_some(props::NONE_LOST)
        };
        failed.map_or(Ok(()), |p| Err(p.to_string()))
    };
    let (mut report, last) = conformance::replay_checked(
        &nodes,
        |node, header| {
            let meta: TraceMeta = serde_json::from_value(header.meta.clone())
                .map_err(|e| format!("peer {node}: header meta: {e}"))?;
            if !(2..=MAX_PEERS).contains(&meta.peers) || node as usize >= meta.peers {
                return Err(format!("peer {node} is not one of {} peers", meta.peers));
            }
            Ok(peer_actor(meta.peers))
        },
        per_peer,
    )?;
    let peers: Vec<&State> = last.values().collect();
    for (holds, name) in [
        (
            props::same_ops_same_journal_of(&peers),
            props::SAME_OPS_SAME_JOURNAL,
        ),
        (props::stable_never_undone_of(&peers), props::STABLE),
    ] {
        if !holds {
            return Err(ConformanceError::Property(format!(
                "{name} (the peers' last states)"
            )));
        }
    }
    report.properties = 6;
    Ok(report)
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
    /// The view a `Document` answer carries; `None` for any other message.
    pub fn of(answer: Msg) -> Option<View> {
        match answer {
            StageMsg::Document {
                stage,
                stable,
                held,
                items,
            } => Some(View {
                stage,
                stable,
                held,
                items,
            }),
            _ => None,
        }
    }
}

/// The answers a local user waits for, in the order its requests entered the inbox: the
/// actor answers each `Edit` with one `Edited` and each `Show` with one `Document`, to the
/// sender, in input order.
#[derive(Default)]
struct Waiting {
    /// Held while a request is queued and sent, so queue order is inbox order.
    order: tokio::sync::Mutex<()>,
    replies: Mutex<VecDeque<oneshot::Sender<Msg>>>,
}

impl Waiting {
    fn replies(&self) -> std::sync::MutexGuard<'_, VecDeque<oneshot::Sender<Msg>>> {
        // Nothing panics while holding it; recover the queue if something did.
        self.replies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running peer.
pub struct PeerHandle {
    user: LocalUser,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StageError>>,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
}

/// This process's user of a running peer; cheap to clone, usable from any task. Its
/// requests are messages to the actor from the user's id, as a remote user's are.
#[derive(Clone)]
pub struct LocalUser {
    inbox: mpsc::Sender<Input<Msg>>,
    waiting: Arc<Waiting>,
}

impl LocalUser {
    async fn ask(&self, msg: Msg) -> Result<Msg, StageError> {
        let stopped = || StageError::Closed("the peer stopped".into());
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.waiting.order.lock().await;
            self.waiting.replies().push_back(tx);
            self.inbox
                .send(Input::Msg(Id::from(LOCAL_USER), msg))
                .await
                .map_err(|_| stopped())?;
        }
        rx.await.map_err(|_| stopped())
    }

    /// Executes a user's edit on the peer (claim 1): returns the new operation and its stage
    /// once it is saved and its message sent.
    pub async fn edit(&self, edit: Edit<Value>) -> Result<(OpId, u32), StageError> {
        match self.ask(StageMsg::Edit(edit)).await? {
            StageMsg::Edited { id, stage } => Ok((id, stage)),
            _ => Err(StageError::Closed("unexpected answer".into())),
        }
    }

    /// The peer's document and stages.
    pub async fn view(&self) -> Result<View, StageError> {
        View::of(self.ask(StageMsg::Show).await?)
            .ok_or_else(|| StageError::Closed("unexpected answer".into()))
    }
}

/// Hands the actor's answers to the local user to its waiting requests, in order.
async fn dispatch(mut frames: mpsc::Receiver<Bytes>, waiting: Arc<Waiting>) {
    while let Some(frame) = frames.recv().await {
        // Encoded by this very process, so it decodes; a failure is skipped all the same.
        let Ok(Frame::Actor(msg) | Frame::Traced(_, msg)) = codec::decode::<Frame<Msg>>(&frame)
        else {
            continue;
        };
        if let Some(tx) = waiting.replies().pop_front() {
            let _ = tx.send(msg);
        }
    }
}

impl PeerHandle {
    /// A user of this peer.
    pub fn user(&self) -> LocalUser {
        self.user.clone()
    }

    /// Executes a user's edit (see [`LocalUser::edit`]).
    pub async fn edit(&self, edit: Edit<Value>) -> Result<(OpId, u32), StageError> {
        self.user.edit(edit).await
    }

    /// The peer's document and stages.
    pub async fn view(&self) -> Result<View, StageError> {
        self.user.view().await
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

/// A stage-sync peer answers no runtime query and publishes nothing: its users ask the
/// actor itself (`Show`).
struct Quiet;

impl Host<Peer<Value>> for Quiet {}

/// Starts peer `cfg.id`: opens its store, listens, dials the peers with a lower id, and runs
/// the actor on the runtime's driver until shut down.
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
    let (dir, init) = (cfg.data_dir.clone(), cfg.init);
    let identity = Owner::new(cfg.cluster_id, cfg.id, ROLE);
    let disk = tokio::task::spawn_blocking(move || Disk::open_with(&dir, &identity, init))
        .await
        .map_err(|e| StageError::Closed(format!("storage task: {e}")))??;
    let router = match &cfg.faults {
        Some(plan) => Router::with_faults(Arc::new(FaultLayer::new(
            plan.clone(),
            cfg.id,
            n as u64 - 1,
        ))),
        None => Router::default(),
    };
    let actor = peer_actor(n);
    let tracer = match &cfg.trace_dir {
        Some(dir) => {
            let meta = serde_json::to_value(TraceMeta { peers: n }).unwrap_or_default();
            Some(Tracer::create(dir, cfg.id, meta)?)
        }
        None => None,
    };
    let options = DriverOptions {
        max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
        ..DriverOptions::default()
    };
    let mut driver = Driver::start_traced(
        actor,
        Id::from(cfg.id as usize),
        disk,
        router.clone(),
        options,
        tracer,
    )
    .await?;
    driver.set_observer(Box::new(super::observe::PeerObserver::new(cfg.id)));
    let cancel = CancellationToken::new();
    let (inbox, mut inbox_rx) = mpsc::channel::<Input<Msg>>(INBOX_INPUTS);
    let waiting = Arc::new(Waiting::default());
    let (user_tx, user_rx) = mpsc::channel(PEER_QUEUE_FRAMES);
    router.register(Id::from(LOCAL_USER), user_tx);
    tokio::spawn(dispatch(user_rx, waiting.clone()));
    let link = Link {
        identity: Identity::new(cfg.cluster_id, cfg.id, cfg.key.clone())
            .with_security(cfg.security.clone()),
        router,
        inbox: inbox.clone(),
        max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
        cancel: cancel.clone(),
    };
    tokio::spawn(transport::accept_loop(listener, link.clone()));
    for a in cfg.addrs.iter().take(cfg.id as usize) {
        tokio::spawn(transport::dial_loop(a.clone(), link.clone()));
    }
    let node_cancel = cancel.clone();
    let stopped = waiting.clone();
    let task = tokio::spawn(async move {
        let result = node_loop::run(&mut driver, &mut inbox_rx, &node_cancel, &mut Quiet).await;
        // Stopped, by a shutdown or a fatal error: the connections close, and a waiting user
        // is told the peer stopped.
        node_cancel.cancel();
        stopped.replies().clear();
        result.map_err(StageError::from)
    });
    Ok(PeerHandle {
        user: LocalUser { inbox, waiting },
        cancel,
        task,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateright::actor::{Actor, Out};
    use std::borrow::Cow;

    #[test]
    fn a_peer_state_saves_the_journal_entry_a_step_adds_and_reloads_equal() {
        let actor = Peer {
            peers: 2,
            edits: vec![],
            ordering: Ordering::Aged,
            stability: true,
            resend: true,
            save: true,
            mutant: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open_or_init(dir.path(), &Owner::new(4, 0, ROLE)).unwrap();
        let me = Id::from(0);
        let mut state = actor.on_start(me, &None, &mut Out::new());
        let mut last = StageRows::default();
        for at in 0..20 {
            let edit = Edit::Insert {
                at,
                value: format!("v{at}"),
            };
            let mut cow = Cow::Owned(state);
            let user = Id::from(LOCAL_USER);
            actor.on_msg(me, &mut cow, user, StageMsg::Edit(edit), &mut Out::new());
            state = cow.into_owned();
            let before = disk.rows_written();
            last = disk.save(&last, state.clone()).unwrap();
            assert_eq!(
                disk.rows_written() - before,
                1,
                "one new journal entry, one row"
            );
        }
        // No peer acknowledged anything: the whole journal is above the stability line.
        assert_eq!(state.journal.len(), 20);
        drop(disk);
        let disk = Disk::open_or_init(dir.path(), &Owner::new(4, 0, ROLE)).unwrap();
        assert_eq!(disk.load::<State>().unwrap(), Some(state));
        assert!(
            Disk::open(dir.path(), &Owner::new(4, 1, ROLE)).is_err(),
            "another peer's directory"
        );
    }
}
