//! Protocol 2's client: runs the model's [`FailoverClient`] over connections to the master
//! and the backup, so it fails over by the model's own rule; and the `status` query.

use super::WireMsg;
use crate::runtime::codec::{self, Frame, Query, Reply};
use crate::runtime::handshake::Identity;
use crate::runtime::storage::digest_of;
use crate::runtime::tls::Security;
use crate::runtime::transport::random_client_id;
use crate::runtime::transport::{self, TransportError};
use futures::{SinkExt, StreamExt};
use replicore_model::failover::msg::{BACKUP, MASTER};
use replicore_model::failover::{
    Answer, ClientOp, Rules, SubmitClient, SubmitMsg, SubmitState, Timer, Timing, Variant,
};
use replicore_model::store::{Kv, KvOp, Version};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::marker::PhantomData;
use std::time::Duration;

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
    /// Neither server could be reached in time: the operation was never written to a
    /// connection, so it had no effect.
    #[error(
        "no server could be reached within {ms} ms (master {master}, backup {backup}); nothing was sent"
    )]
    NotSent {
        /// The wait, in milliseconds.
        ms: u128,
        /// The master's address.
        master: String,
        /// The backup's address.
        backup: String,
    },
    /// Could not reach or authenticate with a server.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The connection to a server failed.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The server.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A server closed the connection before it answered.
    #[error("{addr} closed the connection")]
    Closed {
        /// The server.
        addr: String,
    },
    /// A frame from a server did not decode.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

/// The id the client's application speaks as, to the client actor.
const APP: usize = usize::MAX;

/// The client actor on the runtime's key-value store.
type ClientActor = SubmitClient<String, Vec<u8>>;

/// A client of a protocol-2 cluster that fails over by itself: it runs the model's
/// [`SubmitClient`] actor (ask the node that last answered; on no answer within the retry
/// period, ask the other one and, asking the backup, say the master is unable), and hands
/// it each operation as its next input.
pub struct Client {
    identity: Identity,
    master: String,
    backup: String,
    max_frame_bytes: usize,
    actor: ClientActor,
    state: SubmitState<String, Vec<u8>>,
    /// When the actor's retry timer fires.
    retry_at: Option<tokio::time::Instant>,
    conns: [Option<transport::Connection>; 2],
    /// Whether the operation in flight was written to a connection at least once: until
    /// then a give-up is certain to have had no effect.
    sent: bool,
}

impl Client {
    /// A client of the cluster whose master and backup are at these addresses, with a fresh
    /// random client id.
    pub fn new(master: &str, backup: &str, cluster_id: u64, key: &[u8], timing: Timing) -> Self {
        let identity = Identity::new(cluster_id, random_client_id(), key);
        let actor = SubmitClient {
            rules: Rules {
                variant: Variant::Fenced,
                master: Id::from(MASTER),
                backup: Id::from(BACKUP),
                timing,
            },
            first_op: 0,
            store: PhantomData,
        };
        let mut out = Out::new();
        let state = actor.on_start(Id::from(identity.node_id as usize), &None, &mut out);
        Client {
            identity,
            master: master.to_string(),
            backup: backup.to_string(),
            max_frame_bytes: codec::MAX_FRAME_BYTES_DEFAULT,
            actor,
            state,
            retry_at: None,
            conns: [None, None],
            sent: false,
        }
    }

    /// The same client, its connections secured by `security`.
    pub fn with_security(mut self, security: Security) -> Self {
        self.identity.security = security;
        self
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
            match tokio::time::timeout(self.actor.rules.timing.retry.start, connect).await {
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
        if let Some(io) = self.conns[slot].as_mut() {
            if io.send(bytes).await.is_err() {
                self.conns[slot] = None;
            } else {
                self.sent = true;
            }
        }
    }

    /// The next protocol message from either connection (a closed connection is dropped).
    async fn recv(&mut self) -> Option<(Id, WireMsg)> {
        async fn next(
            c: &mut Option<transport::Connection>,
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

    /// Runs one step of the client actor and carries out its commands: sends to the
    /// servers, the retry deadline; returns the answer it gave the application, if any.
    async fn step(
        &mut self,
        f: impl FnOnce(&ClientActor, Id, &mut Cow<SubmitState<String, Vec<u8>>>, &mut Out<ClientActor>),
    ) -> Option<Answer<Vec<u8>>> {
        let me = Id::from(self.identity.node_id as usize);
        let mut out = Out::new();
        {
            let mut cow = Cow::Borrowed(&self.state);
            f(&self.actor, me, &mut cow, &mut out);
            if let Cow::Owned(next) = cow {
                self.state = next;
            }
        }
        let mut answered = None;
        for c in out {
            match c {
                Command::Send(to, SubmitMsg::Server(msg)) => self.send(to, msg).await,
                Command::Send(_, SubmitMsg::Answered { answer, .. }) => answered = Some(answer),
                Command::SetTimer(Timer::Retry, range) => {
                    self.retry_at = Some(tokio::time::Instant::now() + range.start)
                }
                Command::CancelTimer(Timer::Retry) => self.retry_at = None,
                _ => {}
            }
        }
        answered
    }

    /// Runs one operation through the model's client actor until it is answered or
    /// `within` has passed (then the actor gives it up: its outcome is unknown).
    async fn request(
        &mut self,
        op: ClientOp<String, Vec<u8>>,
        within: Duration,
    ) -> Result<Answer<Vec<u8>>, FailoverClientError> {
        let app = Id::from(APP);
        let submit = SubmitMsg::Submit(op);
        self.sent = false;
        if let Some(answer) = self
            .step(|a, me, st, o| a.on_msg(me, st, app, submit, o))
            .await
        {
            return Ok(answer);
        }
        let give_up = tokio::time::Instant::now() + within;
        loop {
            let wake = self.retry_at.unwrap_or(give_up).min(give_up);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= give_up {
                        self.step(|a, me, st, o| a.on_msg(me, st, app, SubmitMsg::GiveUp, o))
                            .await;
                        if !self.sent {
                            return Err(FailoverClientError::NotSent {
                                ms: within.as_millis(),
                                master: self.master.clone(),
                                backup: self.backup.clone(),
                            });
                        }
                        return Err(FailoverClientError::NoAnswer {
                            ms: within.as_millis(),
                            master: self.master.clone(),
                            backup: self.backup.clone(),
                        });
                    }
                    self.retry_at = None;
                    self.step(|a, me, st, o| a.on_timeout(me, st, &Timer::Retry, o)).await;
                }
                got = self.recv() => {
                    let Some((src, msg)) = got else { continue };
                    let msg = SubmitMsg::Server(msg);
                    if let Some(answer) =
                        self.step(|a, me, st, o| a.on_msg(me, st, src, msg, o)).await
                    {
                        return Ok(answer);
                    }
                }
            }
        }
    }
}

/// Asks server `addr` for its role, epoch, version and data digest.
pub async fn role_of(
    addr: &str,
    cluster_id: u64,
    key: &[u8],
) -> Result<Reply, FailoverClientError> {
    role_of_secured(addr, cluster_id, key, Security::default()).await
}

/// [`role_of`], its connection secured by `security`.
pub async fn role_of_secured(
    addr: &str,
    cluster_id: u64,
    key: &[u8],
    security: Security,
) -> Result<Reply, FailoverClientError> {
    let identity = Identity::new(cluster_id, random_client_id(), key).with_security(security);
    let (mut io, _) = transport::connect(addr, &identity).await?;
    *io.codec_mut() = codec::frame_codec(codec::MAX_FRAME_BYTES_DEFAULT);
    let bytes = codec::encode(
        &Frame::<()>::Query(Query::Role),
        codec::MAX_FRAME_BYTES_DEFAULT,
    )?;
    io.send(bytes)
        .await
        .map_err(|source| FailoverClientError::Io {
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
                return Err(FailoverClientError::Closed {
                    addr: addr.to_string(),
                });
            }
        }
    }
}

/// A store value's digest, as `status` prints it.
pub fn digest(data: &Kv<String, Vec<u8>>) -> [u8; 32] {
    digest_of(data)
}
