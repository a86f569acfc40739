//! A remote client of a node: updates and rollbacks through the master (as a protocol client
//! with its own id and request numbers), reads and status from any node.

use crate::master_slave::node::UpdateError;
use crate::runtime::codec::{self, CodecError, Frame, NodeStatus, Query, Reply};
use crate::runtime::handshake::Identity;
use crate::runtime::storage::{KvStore, UserStore};
use crate::runtime::transport::random_client_id;
use crate::runtime::transport::{self, BACKOFF_MAX, BACKOFF_MIN, TransportError};
use futures::{SinkExt, StreamExt};
use replicore_model::master_slave::{ClientMsg, Mode, Msg};
use replicore_model::store::{KvOp, Version};
use std::marker::PhantomData;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How often an unanswered update is sent again (the master answers a repeat, never
/// applies it twice).
pub const RESEND_EVERY: Duration = Duration::from_secs(1);

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
    /// The node does not answer this query (e.g. asking a slave for request numbers).
    #[error("{addr} does not answer this query (is it the master?)")]
    Unsupported {
        /// The node.
        addr: String,
    },
}

/// A connection to one node.
pub struct Client<S: UserStore = KvStore> {
    addr: String,
    identity: Identity,
    max_frame_bytes: usize,
    io: Option<Framed<TcpStream, LengthDelimitedCodec>>,
    next_req: Option<u64>,
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
        let mut client = Client {
            addr: addr.to_string(),
            identity: Identity {
                cluster_id,
                node_id: client_id.unwrap_or_else(random_client_id),
                key: key.to_vec(),
            },
            max_frame_bytes: codec::MAX_FRAME_BYTES_DEFAULT,
            io: None,
            next_req: None,
            store: PhantomData,
        };
        client.reconnect().await?;
        Ok(client)
    }

    /// This client's id.
    pub fn client_id(&self) -> u64 {
        self.identity.node_id
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.io = None;
        let (mut io, _peer) = transport::connect(&self.addr, &self.identity).await?;
        io.codec_mut().set_max_frame_length(self.max_frame_bytes);
        self.io = Some(io);
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

    /// This node's status.
    pub async fn status(&mut self) -> Result<NodeStatus, ClientError> {
        match self.query(Query::Status).await? {
            Reply::Status(s) => Ok(s),
            _ => Err(ClientError::Unsupported {
                addr: self.addr.clone(),
            }),
        }
    }

    /// The request number the next [`Client::update`] will use: asked of the master once
    /// (its ledger entry for this client id), then counted locally.
    pub async fn next_req(&mut self) -> Result<u64, ClientError> {
        if let Some(r) = self.next_req {
            return Ok(r);
        }
        match self.query(Query::NextReq).await? {
            Reply::NextReq(r) => {
                self.next_req = Some(r);
                Ok(r)
            }
            _ => Err(ClientError::Unsupported {
                addr: self.addr.clone(),
            }),
        }
    }

    /// Sends `msg` and waits up to `wait` for the master's answer about request `req`,
    /// re-sending it every [`RESEND_EVERY`] and reconnecting (capped backoff) if the
    /// connection drops.
    async fn exchange(
        &mut self,
        req: u64,
        msg: Msg<S>,
        wait: Duration,
    ) -> Result<Version, ClientError> {
        let deadline = Instant::now() + wait;
        let mut backoff = BACKOFF_MIN;
        'attempt: loop {
            if Instant::now() >= deadline {
                return Err(UpdateError::NoAnswer(wait).into());
            }
            if let Err(e) = self.send(&Frame::Actor(&msg)).await {
                tracing::debug!(error = %e, "send failed; reconnecting");
                self.io = None;
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue 'attempt;
            }
            let resend_at = (Instant::now() + RESEND_EVERY).min(deadline);
            loop {
                let frame = match tokio::time::timeout_at(resend_at, self.recv()).await {
                    Err(_) => continue 'attempt,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "connection lost; reconnecting");
                        self.io = None;
                        continue 'attempt;
                    }
                    Ok(Ok(f)) => f,
                };
                match frame {
                    Frame::Actor(Msg::Client(ClientMsg::Committed { req: r, version }))
                        if r == req =>
                    {
                        return Ok(version);
                    }
                    Frame::Actor(Msg::Client(ClientMsg::Aborted {
                        req: r,
                        version,
                        reason,
                    })) if r == req => {
                        return Err(UpdateError::aborted(reason, version).into());
                    }
                    // Answers to other requests or stray frames.
                    _ => {}
                }
            }
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
        let req = self.next_req().await?;
        self.next_req = Some(req + 1);
        let version = self
            .exchange(req, Msg::Client(ClientMsg::Update { req, op, mode }), wait)
            .await?;
        Ok((req, version))
    }

    /// Asks the master to roll back this client's request `req` and waits for that request's
    /// outcome: `Err(UpdateError::RolledBack)` when it was undecided and is now aborted, or its
    /// earlier outcome when already decided.
    pub async fn rollback(&mut self, req: u64, wait: Duration) -> Result<Version, ClientError> {
        self.exchange(req, Msg::Client(ClientMsg::Rollback { req }), wait)
            .await
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
