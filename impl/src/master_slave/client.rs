//! A remote client of a node: updates and rollbacks through the master by the model's
//! protocol-1 client actor ([`SubmitClient`]: its request numbers, its re-sends), each
//! handed to it as its next input; reads and status from any node.

use crate::master_slave::node::{MASTER_ID, UpdateError};
use crate::runtime::codec::{self, CodecError, Frame, NodeStatus, Query, Reply};
use crate::runtime::handshake::Identity;
use crate::runtime::storage::{KvStore, UserStore};
use crate::runtime::tls::Security;
use crate::runtime::transport::random_client_id;
use crate::runtime::transport::{self, TransportError};
use futures::{SinkExt, StreamExt};
use replicore_model::master_slave::client::{RETRY, Rules};
use replicore_model::master_slave::{
    ClientMsg, Mode, Msg, SubmitClient, SubmitMsg, SubmitState, Timer,
};
use replicore_model::store::{KvOp, Version};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::marker::PhantomData;
use std::time::Duration;
use tokio::time::Instant;

/// A client failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach or authenticate with the node.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The connection failed.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The node.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The node closed the connection.
    #[error("{addr} closed the connection")]
    Closed {
        /// The node.
        addr: String,
    },
    /// A frame from the node did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The update did not commit.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// Every attempt to send the request failed: it never left this client, so it has no
    /// effect.
    #[error("the request was never sent to {addr}, so nothing changed: {source}")]
    NotSent {
        /// The node.
        addr: String,
        /// The last attempt's failure.
        #[source]
        source: Box<ClientError>,
    },
    /// A rollback of a request the master has not started: it never received it, or holds
    /// it queued behind the round in progress (where a rollback cannot reach it).
    #[error(
        "the master has not started request {req} of this client (its next is {next_req}): never received, or still queued; nothing to roll back"
    )]
    NotReceived {
        /// The request.
        req: u64,
        /// The next request number the master expects from this client.
        next_req: u64,
    },
    /// A rollback of a request older than the client's last: the master keeps only the last
    /// request's outcome.
    #[error(
        "request {req} is older than this client's last request {last}; the master keeps only the last one's outcome"
    )]
    Forgotten {
        /// The request.
        req: u64,
        /// The client's last request.
        last: u64,
    },
    /// The update's frame would exceed the cluster's frame limit, so it was not sent: the
    /// node would close the connection on it. Nothing changed.
    #[error(
        "update refused before sending: its frame of {len} bytes exceeds the frame limit of {max} bytes (max_frame_bytes); nothing changed"
    )]
    TooLarge {
        /// The encoded frame's length, in bytes.
        len: usize,
        /// The frame limit, in bytes.
        max: usize,
    },
    /// The node does not answer this query (e.g. asking a slave for request numbers).
    #[error("{addr} does not answer this query (is it the master?)")]
    Unsupported {
        /// The node.
        addr: String,
    },
}

/// The id the client's application speaks as, to the client actor.
const APP: usize = usize::MAX;

/// The model's client actor, and its state once its first request number is known.
struct Submitter<S: UserStore> {
    actor: SubmitClient<S>,
    state: SubmitState<S>,
}

/// A connection to one node.
pub struct Client<S: UserStore = KvStore> {
    addr: String,
    identity: Identity,
    max_frame_bytes: usize,
    io: Option<crate::runtime::transport::Connection>,
    /// The node's id, as it proved it in the handshake.
    peer: u64,
    /// Started at the first update, numbered from the master's ledger entry for this id.
    submitter: Option<Submitter<S>>,
    /// When the actor's retry timer fires.
    retry_at: Option<Instant>,
    /// Whether a frame of the request in flight reached the connection (it may have been
    /// received), and the last failure to send one.
    sent: bool,
    send_error: Option<ClientError>,
    store: PhantomData<S>,
}

impl<S: UserStore> Client<S> {
    /// Connects to the node at `addr`. `client_id` names this client in the master's ledger
    /// (random when `None`); reuse an id to roll back its requests later.
    pub async fn connect(
        addr: &str,
        cluster_id: u64,
        key: &[u8],
        client_id: Option<u64>,
    ) -> Result<Self, ClientError> {
        Self::connect_secured(addr, cluster_id, key, client_id, Security::default()).await
    }

    /// [`Client::connect`], its connection secured by `security`.
    pub async fn connect_secured(
        addr: &str,
        cluster_id: u64,
        key: &[u8],
        client_id: Option<u64>,
        security: Security,
    ) -> Result<Self, ClientError> {
        let node_id = client_id.unwrap_or_else(random_client_id);
        let mut client = Client {
            addr: addr.to_string(),
            identity: Identity::new(cluster_id, node_id, key).with_security(security),
            max_frame_bytes: codec::MAX_FRAME_BYTES_DEFAULT,
            io: None,
            peer: MASTER_ID,
            submitter: None,
            retry_at: None,
            sent: false,
            send_error: None,
            store: PhantomData,
        };
        client.reconnect().await?;
        Ok(client)
    }

    /// Sets the frame limit to the cluster's (`max_frame_bytes`): an update whose frame
    /// exceeds it is refused before sending ([`ClientError::TooLarge`]), and no frame above
    /// it is accepted from the node.
    pub fn with_max_frame_bytes(mut self, max_frame_bytes: usize) -> Self {
        self.max_frame_bytes = max_frame_bytes;
        if let Some(io) = self.io.as_mut() {
            io.codec_mut().set_max_frame_length(max_frame_bytes);
        }
        self
    }

    /// This client's id.
    pub fn client_id(&self) -> u64 {
        self.identity.node_id
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.io = None;
        let (mut io, peer) = transport::connect(&self.addr, &self.identity).await?;
        io.codec_mut().set_max_frame_length(self.max_frame_bytes);
        self.io = Some(io);
        self.peer = peer;
        Ok(())
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    async fn send<T: serde::Serialize>(&mut self, frame: &Frame<T>) -> Result<(), ClientError> {
        let bytes = codec::encode(frame, self.max_frame_bytes)?;
        if self.io.is_none() {
            self.reconnect().await?;
        }
        let addr = self.addr.clone();
        let io = self.io.as_mut().ok_or(ClientError::Closed { addr })?;
        let r = io.send(bytes).await;
        r.map_err(|e| self.io_error(e))
    }

    async fn recv(&mut self) -> Result<Frame<Msg<S>>, ClientError> {
        let addr = self.addr.clone();
        let io = self
            .io
            .as_mut()
            .ok_or(ClientError::Closed { addr: addr.clone() })?;
        match io.next().await {
            None => {
                self.io = None;
                Err(ClientError::Closed { addr })
            }
            Some(Err(e)) => {
                self.io = None;
                Err(self.io_error(e))
            }
            // A traced master names its sends; a client does not trace.
            Some(Ok(body)) => Ok(match codec::decode(&body)? {
                Frame::Traced(_, msg) => Frame::Actor(msg),
                frame => frame,
            }),
        }
    }

    async fn query(&mut self, q: Query) -> Result<Reply, ClientError> {
        self.send(&Frame::<()>::Query(q)).await?;
        loop {
            if let Frame::Reply(r) = self.recv().await? {
                return Ok(r);
            }
        }
    }

    /// Reads `key` on this node: the version read at and the value.
    pub async fn get(&mut self, key: &[u8]) -> Result<(Version, Option<Vec<u8>>), ClientError> {
        match self.query(Query::Get { key: key.to_vec() }).await? {
            Reply::Value { version, value } => Ok((version, value)),
            _ => Err(ClientError::Unsupported {
                addr: self.addr.clone(),
            }),
        }
    }

    /// A page of this node's committed rows after `after`, at most `limit`: the version
    /// read at, the `(key, value)` rows in key order, and whether more follow.
    pub async fn scan(
        &mut self,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<(Version, Vec<(Vec<u8>, Vec<u8>)>, bool), ClientError> {
        match self.query(Query::Scan { after, limit }).await? {
            Reply::Rows {
                version,
                rows,
                more,
            } => Ok((version, rows, more)),
            _ => Err(ClientError::Unsupported {
                addr: self.addr.clone(),
            }),
        }
    }

    /// This node's status.
    pub async fn status(&mut self) -> Result<NodeStatus, ClientError> {
        match self.query(Query::Status).await? {
            Reply::Status(s) => Ok(s),
            _ => Err(ClientError::Unsupported {
                addr: self.addr.clone(),
            }),
        }
    }

    /// The request number the next [`Client::update`] will use. The first call asks the
    /// master where this client id's numbering stands (its ledger entry) and starts the
    /// model's client actor there; from then on the actor numbers its requests.
    pub async fn next_req(&mut self) -> Result<u64, ClientError> {
        if let Some(s) = &self.submitter {
            return Ok(s.state.next_req);
        }
        let first_req = match self.query(Query::NextReq).await? {
            Reply::NextReq(r) => r,
            _ => {
                return Err(ClientError::Unsupported {
                    addr: self.addr.clone(),
                });
            }
        };
        let actor = SubmitClient {
            rules: Rules {
                master: Id::from(MASTER_ID as usize),
                retry: RETRY,
            },
            first_req,
            store: PhantomData,
        };
        let state = actor.on_start(self.me(), &None, &mut Out::new());
        self.submitter = Some(Submitter { actor, state });
        Ok(first_req)
    }

    fn me(&self) -> Id {
        Id::from(self.identity.node_id as usize)
    }

    /// Runs one step of the client actor and carries out its commands: frames to the node,
    /// the retry deadline; returns the answer it gave the application, if any.
    async fn step(
        &mut self,
        f: impl FnOnce(&SubmitClient<S>, Id, &mut Cow<SubmitState<S>>, &mut Out<SubmitClient<S>>),
    ) -> Option<ClientMsg<S>> {
        let me = self.me();
        let mut out = Out::new();
        if let Some(s) = self.submitter.as_mut() {
            let mut cow = Cow::Borrowed(&s.state);
            f(&s.actor, me, &mut cow, &mut out);
            if let Cow::Owned(next) = cow {
                s.state = next;
            }
        }
        let mut answered = None;
        for c in out {
            match c {
                Command::Send(_, SubmitMsg::Server(msg)) => {
                    // A failed send drops the connection; the retry sends again.
                    match self.send(&Frame::Actor(&msg)).await {
                        Ok(()) => self.sent = true,
                        Err(e) => {
                            tracing::debug!(error = %e, "send failed; the retry reconnects");
                            self.io = None;
                            self.send_error = Some(e);
                        }
                    }
                }
                Command::Send(_, SubmitMsg::Answered(answer)) => answered = Some(answer),
                Command::SetTimer(Timer::Retry, range) => {
                    self.retry_at = Some(Instant::now() + range.start)
                }
                Command::CancelTimer(Timer::Retry) => self.retry_at = None,
                _ => {}
            }
        }
        answered
    }

    /// Hands `input` to the client actor and runs it until it answers or `wait` has passed
    /// (then the actor gives the request up: its outcome is unknown, unless no frame of it
    /// ever left this client: [`ClientError::NotSent`]).
    async fn request(
        &mut self,
        input: SubmitMsg<S>,
        wait: Duration,
    ) -> Result<ClientMsg<S>, ClientError> {
        let app = Id::from(APP);
        self.sent = false;
        self.send_error = None;
        if let Some(answer) = self
            .step(|a, me, st, o| a.on_msg(me, st, app, input, o))
            .await
        {
            return Ok(answer);
        }
        let give_up = Instant::now() + wait;
        loop {
            let wake = self.retry_at.unwrap_or(give_up).min(give_up);
            let frame = tokio::select! {
                _ = tokio::time::sleep_until(wake) => None,
                f = async {
                    if self.io.is_none() {
                        std::future::pending::<()>().await;
                    }
                    self.recv().await
                } => Some(f),
            };
            match frame {
                None if Instant::now() >= give_up => {
                    self.step(|a, me, st, o| a.on_msg(me, st, app, SubmitMsg::GiveUp, o))
                        .await;
                    if !self.sent
                        && let Some(e) = self.send_error.take()
                    {
                        return Err(ClientError::NotSent {
                            addr: self.addr.clone(),
                            source: Box::new(e),
                        });
                    }
                    return Err(UpdateError::NoAnswer(wait).into());
                }
                None => {
                    self.retry_at = None;
                    self.step(|a, me, st, o| a.on_timeout(me, st, &Timer::Retry, o))
                        .await;
                }
                Some(Ok(Frame::Actor(msg))) => {
                    let src = Id::from(self.peer as usize);
                    let msg = SubmitMsg::Server(msg);
                    if let Some(answer) = self
                        .step(|a, me, st, o| a.on_msg(me, st, src, msg, o))
                        .await
                    {
                        return Ok(answer);
                    }
                }
                // Stray frames; a lost connection waits for the retry, which reconnects.
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "connection lost"),
            }
        }
    }

    /// The outcome `answer` reports.
    fn outcome(answer: ClientMsg<S>) -> Result<(u64, Version), ClientError> {
        match answer {
            ClientMsg::Committed { req, version } => Ok((req, version)),
            ClientMsg::Aborted {
                version, reason, ..
            } => Err(UpdateError::aborted(reason, version).into()),
            // The actor answers only with the master's outcome of a request.
            ClientMsg::Update { .. } | ClientMsg::Rollback { .. } => Err(ClientError::Closed {
                addr: String::new(),
            }),
        }
    }

    /// Refuses an update whose frame would exceed the frame limit, before anything is sent:
    /// the node would close the connection on it and the client would only learn, after
    /// its wait, that the outcome is unknown. The largest request number bounds the frame.
    fn check_size(&self, op: &S::Op, mode: Mode) -> Result<(), ClientError> {
        let update = Msg::<S>::Client(ClientMsg::Update {
            req: u64::MAX,
            op: op.clone(),
            mode,
        });
        match codec::encode(&Frame::Actor(&update), self.max_frame_bytes) {
            Err(CodecError::TooLarge { len, max }) => Err(ClientError::TooLarge { len, max }),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    /// Submits `op` to the master and waits up to `wait` for its outcome. Returns the
    /// request number and the committed version.
    pub async fn update(
        &mut self,
        op: S::Op,
        mode: Mode,
        wait: Duration,
    ) -> Result<(u64, Version), ClientError> {
        self.check_size(&op, mode)?;
        self.next_req().await?;
        let answer = self.request(SubmitMsg::Update { op, mode }, wait).await?;
        Self::outcome(answer)
    }

    /// Asks the master to roll back this client's request `req` and waits for that request's
    /// outcome: `Err(UpdateError::RolledBack)` when it was undecided and is now aborted, or its
    /// earlier outcome when already decided.
    ///
    /// A request the master has not started, or one older than the client's last, is
    /// refused at once ([`ClientError::NotReceived`], [`ClientError::Forgotten`]): the master
    /// would not answer a rollback of either.
    pub async fn rollback(&mut self, req: u64, wait: Duration) -> Result<Version, ClientError> {
        let next_req = match self.query(Query::NextReq).await? {
            Reply::NextReq(r) => r,
            _ => {
                return Err(ClientError::Unsupported {
                    addr: self.addr.clone(),
                });
            }
        };
        if req >= next_req {
            return Err(ClientError::NotReceived { req, next_req });
        }
        if req + 1 < next_req {
            return Err(ClientError::Forgotten {
                req,
                last: next_req - 1,
            });
        }
        if self.submitter.is_none() {
            // A rollback takes no number: the actor's numbering is not needed yet.
            let actor = SubmitClient {
                rules: Rules {
                    master: Id::from(MASTER_ID as usize),
                    retry: RETRY,
                },
                first_req: 0,
                store: PhantomData,
            };
            let state = actor.on_start(self.me(), &None, &mut Out::new());
            self.submitter = Some(Submitter { actor, state });
            let answer = self.request(SubmitMsg::Rollback { req }, wait).await;
            self.submitter = None;
            return Self::outcome(answer?).map(|(_, v)| v);
        }
        let answer = self.request(SubmitMsg::Rollback { req }, wait).await?;
        Self::outcome(answer).map(|(_, v)| v)
    }
}

impl Client<KvStore> {
    /// Sets `key` to `value` through the master.
    pub async fn put(
        &mut self,
        key: &str,
        value: &[u8],
        mode: Mode,
        wait: Duration,
    ) -> Result<(u64, Version), ClientError> {
        self.update(KvOp::Put(key.to_string(), value.to_vec()), mode, wait)
            .await
    }

    /// Removes `key` through the master.
    pub async fn delete(
        &mut self,
        key: &str,
        mode: Mode,
        wait: Duration,
    ) -> Result<(u64, Version), ClientError> {
        self.update(KvOp::Delete(key.to_string()), mode, wait).await
    }
}
