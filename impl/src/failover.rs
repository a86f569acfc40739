//! Protocol 2 (failover approver, seed 002) on the runtime: a server runs the model's
//! [`FailoverNode`] with the generic [`Driver`] over the authenticated transport and redb; a
//! client runs the model's [`FailoverClient`] over connections to the master and the backup,
//! so it fails over by the model's own rule. `docs/failover.md` tells the protocol.
//!
//! ```text
//!   client (FailoverClient actor) ──Request──▶ master (node 0) ──Advise──▶ backup (node 1)
//!          ▲   no answer: Retry timer,         ◀──Stored───────────────────┘
//!          │   the other server, "master unable"        heartbeats renew the backup's lease;
//!          └──────────────Reply─────────────── approver  a lapsed lease: backup takes over
//! ```
//!
//! Node ids: the master is 0, the designated backup is 1 (the cluster file's first slave),
//! further slaves follow. A node dials every node of a lower id and accepts the others.

use crate::codec::{self, Frame, Query, Reply};
use crate::driver::{Driver, DriverError, DriverOptions, Router};
use crate::handshake::Identity;
use crate::node::{NodeError, random_client_id};
use crate::storage::{Disk, Durable, KvStore};
use crate::transport::{self, Input, Link, TransportError};
use futures::{SinkExt, StreamExt};
use replicore_model::failover::msg::{BACKUP, MASTER};
use replicore_model::failover::{
    Answer, ClientOp, ClientState, FailoverClient, FailoverNode, Msg, NodeStorage, Role, Timer,
    Timing, Variant,
};
use replicore_model::store::{Kv, KvOp, Version};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// The server actor on the runtime's key-value store.
pub type Server = FailoverNode<String, Vec<u8>>;
/// What a server saves.
pub type Storage = NodeStorage<String, Vec<u8>>;
/// A protocol-2 message on the runtime's store.
pub type WireMsg = Msg<String, Vec<u8>>;

/// Inputs queued for a server before senders wait.
const INBOX_INPUTS: usize = 4096;

impl Durable for Storage {
    type Data = KvStore;

    fn data(&self) -> &KvStore {
        &self.data
    }

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
    /// The data directory.
    pub data_dir: PathBuf,
    /// The frame limit.
    pub max_frame_bytes: usize,
    /// Timer durations.
    pub timing: Timing,
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
    pub async fn start(config: ServerConfig) -> Result<Self, NodeError> {
        if config.servers.len() < 2 || config.node_id as usize >= config.servers.len() {
            return Err(NodeError::Config(
                "protocol 2 needs a master and a backup, and the node id must name one of the servers",
            ));
        }
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let (dir, cluster, node) = (config.data_dir.clone(), config.cluster_id, config.node_id);
        let disk = tokio::task::spawn_blocking(move || Disk::open(&dir, cluster, node))
            .await
            .map_err(|e| NodeError::Task(e.to_string()))??;
        let router = Router::default();
        let actor = server_actor(config.node_id, config.servers.len(), config.timing.clone());
        let options = DriverOptions {
            max_frame_bytes: config.max_frame_bytes,
            ..DriverOptions::default()
        };
        let driver = Driver::start(
            actor,
            Id::from(config.node_id as usize),
            disk,
            router.clone(),
            options,
        )
        .await?;
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_INPUTS);
        let cancel = CancellationToken::new();
        let link = Link {
            identity: Identity {
                cluster_id: config.cluster_id,
                node_id: config.node_id,
                key: config.key.clone(),
            },
            router,
            inbox: inbox_tx,
            max_frame_bytes: config.max_frame_bytes,
            cancel: cancel.clone(),
        };
        let first = view_of(driver.state());
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
        let main = tokio::spawn(run(
            driver,
            inbox_rx,
            cancel.clone(),
            view_tx,
            config.node_id,
        ));
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
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.cancel.cancel();
        self.stopped().await
    }

    /// Waits until it stops (a storage failure stops it).
    pub async fn stopped(&mut self) -> Result<(), NodeError> {
        if let Some(main) = self.main.as_mut() {
            let r = main.await;
            self.main = None;
            match r {
                Ok(r) => r?,
                Err(e) => return Err(NodeError::Task(e.to_string())),
            }
        }
        Ok(())
    }
}

async fn run(
    mut driver: Driver<Server>,
    mut inbox: mpsc::Receiver<Input<WireMsg>>,
    cancel: CancellationToken,
    view: watch::Sender<ServerView>,
    node_id: u64,
) -> Result<(), DriverError> {
    loop {
        let next = driver.next_timer();
        let at = next.as_ref().map(|(_, at)| *at);
        let timer = async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            // Due timers first: a flood of requests must not starve the heartbeat that
            // renews the backup's lease.
            _ = timer => {
                if let Some((t, _)) = next {
                    driver.on_timeout(t).await?;
                }
            }
            input = inbox.recv() => match input {
                None => break,
                Some(Input::Msg(src, msg)) | Some(Input::Traced(src, _, msg)) => {
                    driver.on_msg(src, msg).await?
                }
                Some(Input::Query(_, query, reply)) => {
                    let state = driver.state();
                    let answer = match query {
                        Query::Get { key } => Reply::Value {
                            version: state.version(),
                            value: String::from_utf8(key)
                                .ok()
                                .and_then(|k| state.data.read(&k).cloned()),
                        },
                        Query::Role => Reply::Role {
                            node_id,
                            role: state.role.name().to_string(),
                            epoch: state.epoch,
                            version: state.version(),
                            keys: state.data.len() as u64,
                            digest: crate::node::digest_of(&state.data),
                        },
                        Query::Status | Query::NextReq => Reply::Unsupported,
                    };
                    let _ = reply.send(answer);
                }
            },
        }
        let now = view_of(driver.state());
        view.send_if_modified(|v| {
            if *v == now {
                return false;
            }
            *v = now;
            true
        });
    }
    tracing::info!(node = node_id, "failover server stopped");
    Ok(())
}

/// A client failure.
#[derive(Debug, thiserror::Error)]
pub enum FailoverClientError {
    /// Neither server answered in time.
    #[error("no server answered within {ms} ms (master {master}, backup {backup})")]
    NoAnswer {
        /// The wait, in milliseconds.
        ms: u128,
        /// The master's address.
        master: String,
        /// The backup's address.
        backup: String,
    },
    /// A frame from a server did not decode.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

/// A client of a protocol-2 cluster that fails over by itself: it runs the model's
/// [`FailoverClient`] actor (ask the node that last answered; on no answer within the retry
/// period, ask the other one and, asking the backup, say the master is unable).
pub struct Client {
    identity: Identity,
    master: String,
    backup: String,
    max_frame_bytes: usize,
    timing: Timing,
    /// The server that answered last (where the next operation goes first).
    preferred: Id,
    /// Operations issued so far (the next one is numbered `issued + 1`).
    issued: u64,
    conns: [Option<Framed<TcpStream, LengthDelimitedCodec>>; 2],
}

impl Client {
    /// A client of the cluster whose master and backup are at these addresses, with a fresh
    /// random client id.
    pub fn new(master: &str, backup: &str, cluster_id: u64, key: &[u8], timing: Timing) -> Self {
        Client {
            identity: Identity {
                cluster_id,
                node_id: random_client_id(),
                key: key.to_vec(),
            },
            master: master.to_string(),
            backup: backup.to_string(),
            max_frame_bytes: codec::MAX_FRAME_BYTES_DEFAULT,
            timing,
            preferred: Id::from(MASTER),
            issued: 0,
            conns: [None, None],
        }
    }

    /// Sets `key` to `value`; returns the version the update made.
    pub async fn put(
        &mut self,
        key: &str,
        value: &[u8],
        within: Duration,
    ) -> Result<Version, FailoverClientError> {
        let op = ClientOp::Update(KvOp::Put(key.to_string(), value.to_vec()));
        match self.request(op, within).await? {
            Answer::Written { version } => Ok(version),
            Answer::Value { version, .. } => Ok(version),
        }
    }

    /// Removes `key`; returns the version the update made.
    pub async fn delete(
        &mut self,
        key: &str,
        within: Duration,
    ) -> Result<Version, FailoverClientError> {
        let op = ClientOp::Update(KvOp::Delete(key.to_string()));
        match self.request(op, within).await? {
            Answer::Written { version } | Answer::Value { version, .. } => Ok(version),
        }
    }

    /// Reads `key` at the approver (linearizable: the master confirms with the backup that it
    /// still approves); returns the value and the approver's version.
    pub async fn get(
        &mut self,
        key: &str,
        within: Duration,
    ) -> Result<(Option<Vec<u8>>, Version), FailoverClientError> {
        match self
            .request(ClientOp::Read(key.to_string()), within)
            .await?
        {
            Answer::Value { value, version } => Ok((value, version)),
            Answer::Written { version } => Ok((None, version)),
        }
    }

    fn addr(&self, to: Id) -> &str {
        if usize::from(to) == MASTER {
            &self.master
        } else {
            &self.backup
        }
    }

    /// Sends `msg` to server `to`, connecting first if needed; a failure drops the
    /// connection (the actor's retry timer moves on).
    async fn send(&mut self, to: Id, msg: WireMsg) {
        let slot = usize::from(to).min(1);
        if self.conns[slot].is_none() {
            let addr = self.addr(to).to_string();
            let connect = transport::connect(&addr, &self.identity);
            match tokio::time::timeout(self.timing.retry.start, connect).await {
                Ok(Ok((mut io, _))) => {
                    *io.codec_mut() = codec::frame_codec(self.max_frame_bytes);
                    self.conns[slot] = Some(io);
                }
                Ok(Err(TransportError::Connect { .. })) | Err(_) => return,
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "cannot reach server");
                    return;
                }
            }
        }
        let Ok(bytes) = codec::encode(&Frame::Actor(msg), self.max_frame_bytes) else {
            return;
        };
        if let Some(io) = self.conns[slot].as_mut()
            && io.send(bytes).await.is_err()
        {
            self.conns[slot] = None;
        }
    }

    /// The next protocol message from either connection (a closed connection is dropped).
    async fn recv(&mut self) -> Option<(Id, WireMsg)> {
        async fn next(
            c: &mut Option<Framed<TcpStream, LengthDelimitedCodec>>,
        ) -> Option<Result<bytes::BytesMut, std::io::Error>> {
            match c {
                Some(io) => io.next().await,
                None => std::future::pending().await,
            }
        }
        let [a, b] = &mut self.conns;
        let (slot, frame) = tokio::select! {
            f = next(a) => (0usize, f),
            f = next(b) => (1usize, f),
        };
        match frame {
            Some(Ok(body)) => match codec::decode::<Frame<WireMsg>>(&body) {
                Ok(Frame::Actor(m)) | Ok(Frame::Traced(_, m)) => Some((Id::from(slot), m)),
                _ => None,
            },
            _ => {
                self.conns[slot] = None;
                None
            }
        }
    }

    /// Carries out the client actor's commands: sends, and the retry deadline.
    async fn execute(
        &mut self,
        out: Out<FailoverClient<String, Vec<u8>>>,
        deadline: &mut Option<tokio::time::Instant>,
    ) {
        for c in out {
            match c {
                Command::Send(to, msg) => self.send(to, msg).await,
                Command::SetTimer(Timer::Retry, range) => {
                    *deadline = Some(tokio::time::Instant::now() + range.start)
                }
                Command::CancelTimer(_) => *deadline = None,
                _ => {}
            }
        }
    }

    /// Runs one operation through the model's client actor until it is answered or
    /// `within` has passed.
    async fn request(
        &mut self,
        op: ClientOp<String, Vec<u8>>,
        within: Duration,
    ) -> Result<Answer<Vec<u8>>, FailoverClientError> {
        // The actor numbers operations by script index: a script whose earlier entries
        // stand for the operations already issued continues the numbering, so servers tell
        // a new operation from a retry.
        let mut script = vec![ClientOp::Read(String::new()); self.issued as usize];
        script.push(op);
        let actor = FailoverClient {
            variant: Variant::Fenced,
            master: Id::from(MASTER),
            backup: Id::from(BACKUP),
            script,
            timing: self.timing.clone(),
        };
        let me = Id::from(self.identity.node_id as usize);
        let mut state: Cow<ClientState> = Cow::Owned(ClientState {
            next: self.issued as usize,
            target: self.preferred,
        });
        let mut deadline = None;
        let mut out = Out::new();
        // `on_start` would begin at operation 1: send this operation the way it does.
        let mut first: Cow<ClientState> = Cow::Owned(ClientState {
            next: state.next,
            target: other(self.preferred),
        });
        actor.on_timeout(me, &mut first, &Timer::Retry, &mut out);
        self.execute(out, &mut deadline).await;
        let give_up = tokio::time::Instant::now() + within;
        loop {
            let retry = deadline.unwrap_or(give_up).min(give_up);
            tokio::select! {
                _ = tokio::time::sleep_until(retry) => {
                    if tokio::time::Instant::now() >= give_up {
                        self.issued += 1;
                        return Err(FailoverClientError::NoAnswer {
                            ms: within.as_millis(),
                            master: self.master.clone(),
                            backup: self.backup.clone(),
                        });
                    }
                    let mut out = Out::new();
                    actor.on_timeout(me, &mut state, &Timer::Retry, &mut out);
                    self.execute(out, &mut deadline).await;
                }
                got = self.recv() => {
                    let Some((src, msg)) = got else { continue };
                    let answer = match &msg {
                        Msg::Reply { op, answer, .. } if *op == self.issued + 1 => answer.clone(),
                        _ => continue,
                    };
                    let mut out = Out::new();
                    actor.on_msg(me, &mut state, src, msg, &mut out);
                    if state.next as u64 > self.issued {
                        self.issued += 1;
                        self.preferred = state.target;
                        return Ok(answer);
                    }
                }
            }
        }
    }
}

fn other(id: Id) -> Id {
    if usize::from(id) == MASTER {
        Id::from(BACKUP)
    } else {
        Id::from(MASTER)
    }
}

/// Asks server `addr` for its role, epoch, version and data digest.
pub async fn role_of(
    addr: &str,
    cluster_id: u64,
    key: &[u8],
) -> Result<Reply, crate::client::ClientError> {
    let identity = Identity {
        cluster_id,
        node_id: random_client_id(),
        key: key.to_vec(),
    };
    let (mut io, _) = transport::connect(addr, &identity).await?;
    *io.codec_mut() = codec::frame_codec(codec::MAX_FRAME_BYTES_DEFAULT);
    let bytes = codec::encode(
        &Frame::<()>::Query(Query::Role),
        codec::MAX_FRAME_BYTES_DEFAULT,
    )?;
    io.send(bytes)
        .await
        .map_err(|source| crate::client::ClientError::Io {
            addr: addr.to_string(),
            source,
        })?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), io.next()).await {
            Ok(Some(Ok(body))) => {
                if let Frame::<WireMsg>::Reply(r) = codec::decode(&body)? {
                    return Ok(r);
                }
            }
            _ => {
                return Err(crate::client::ClientError::Closed {
                    addr: addr.to_string(),
                });
            }
        }
    }
}

/// A store value's digest, as `status` prints it.
pub fn digest(data: &Kv<String, Vec<u8>>) -> [u8; 32] {
    crate::node::digest_of(data)
}
