//! Protocol 2's client: runs the model's [`FailoverClient`] over connections to the master
//! and the backup, so it fails over by the model's own rule; and the `status` query.

use super::WireMsg;
use crate::runtime::codec::{self, Frame, Query, Reply};
use crate::runtime::handshake::Identity;
use crate::runtime::storage::digest_of;
use crate::runtime::transport::random_client_id;
use crate::runtime::transport::{self, TransportError};
use futures::{SinkExt, StreamExt};
use replicore_model::failover::msg::{BACKUP, MASTER};
use replicore_model::failover::{
    Answer, ClientOp, ClientState, FailoverClient, Msg, Timer, Timing, Variant,
};
use replicore_model::store::{Kv, KvOp, Version};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

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
) -> Result<Reply, FailoverClientError> {
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
