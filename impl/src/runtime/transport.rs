//! TCP transport: a listener that accepts peers and clients, a dialer that keeps a link to
//! the master with capped backoff, and the per-connection tasks that move frames between a
//! socket, the [`Router`] and the node's inbox.
//!
//! Every connection opens the same way, whoever dials ([`connect`], [`accept`]): TCP, then
//! TLS 1.3 ([`crate::runtime::tls`], unless the identity's security is plain), then the key
//! proof of [`crate::runtime::handshake`] bound to the TLS session, then the check that the
//! peer's certificate may claim the id it proved the key for.
//!
//! Every channel is bounded: a connection's outbound queue holds [`PEER_QUEUE_FRAMES`]
//! frames (overflow is dropped, i.e. message loss, which the protocol repairs), and the
//! inbox applies backpressure to readers.

use crate::runtime::codec::{self, Frame, Query, Reply};
use crate::runtime::driver::{PEER_QUEUE_FRAMES, Router};
use crate::runtime::handshake::{self, HandshakeError, Identity};
use crate::runtime::tls::{self, Stream};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stateright::actor::Id;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// The first reconnection delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Reconnection delays: exponential from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], each drawn
/// uniformly from the upper half of its step ("equal jitter"), so a cluster's dialers that
/// lost the same peer do not redial it in lockstep, and no delay is ever under half of
/// [`BACKOFF_MIN`].
#[derive(Debug)]
pub struct Backoff {
    step: Duration,
    rng: rand::rngs::StdRng,
}

impl Backoff {
    /// A backoff drawing its jitter from the OS.
    pub fn new() -> Self {
        Self::from_rng(rand::SeedableRng::from_os_rng())
    }

    /// A backoff whose jitter is a function of `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self::from_rng(rand::SeedableRng::seed_from_u64(seed))
    }

    fn from_rng(rng: rand::rngs::StdRng) -> Self {
        Backoff {
            step: BACKOFF_MIN,
            rng,
        }
    }

    /// The delay before the next attempt; the step then doubles, up to [`BACKOFF_MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let half = self.step / 2;
        let delay = half + rand::Rng::random_range(&mut self.rng, Duration::ZERO..=half);
        self.step = (self.step * 2).min(BACKOFF_MAX);
        delay
    }

    /// Starts again from [`BACKOFF_MIN`] (after a connection that lasted).
    pub fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a connection must have lasted for the next redial to start again from
/// [`BACKOFF_MIN`]; a peer that closes each connection at once is redialed ever slower.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(5);

/// The most connections a node accepts at once (handshaking or served); beyond it a new
/// connection is closed at once.
pub const CONNECTIONS_MAX: usize = 1024;

/// Client ids are drawn above this, far from node ids.
pub const CLIENT_ID_MIN: u64 = 1 << 32;

/// A fresh random client id.
pub fn random_client_id() -> u64 {
    CLIENT_ID_MIN + (rand::random::<u64>() >> 4)
}

/// An open connection: length-delimited frames over TLS (or plain TCP).
pub type Connection = Framed<Stream, LengthDelimitedCodec>;

/// What a connection hands the node.
#[derive(Debug)]
pub enum Input<M> {
    /// A protocol message from an authenticated peer.
    Msg(Id, M),
    /// A protocol message from a traced peer, with the id of the send that produced it.
    Traced(Id, crate::runtime::trace::SendId, M),
    /// A runtime query; the answer goes back on the oneshot.
    Query(Id, Query, oneshot::Sender<Reply>),
}

/// A transport failure that concerns one connection only (the node keeps running).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer's address.
        addr: String,
        /// The cause.
        source: HandshakeError,
    },
}

/// What every connection task of a node needs.
pub struct Link<M> {
    /// Who this node is.
    pub identity: Identity,
    /// Outbound frames by peer id.
    pub router: Router,
    /// The node's inbox.
    pub inbox: mpsc::Sender<Input<M>>,
    /// The frame limit.
    pub max_frame_bytes: usize,
    /// Stops every task.
    pub cancel: CancellationToken,
}

impl<M> Clone for Link<M> {
    fn clone(&self) -> Self {
        Link {
            identity: self.identity.clone(),
            router: self.router.clone(),
            inbox: self.inbox.clone(),
            max_frame_bytes: self.max_frame_bytes,
            cancel: self.cancel.clone(),
        }
    }
}

/// Accepts connections until cancelled. A peer failing the handshake is refused with a log
/// line naming it and the reason.
pub async fn accept_loop<M>(listener: TcpListener, link: Link<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, addr) = tokio::select! {
            _ = link.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Typically out of file descriptors: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(BACKOFF_MIN).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer_addr = %addr, limit = CONNECTIONS_MAX, "refused connection: too many connections");
            continue;
        };
        let link = link.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (io, peer) = tokio::select! {
                _ = link.cancel.cancelled() => return,
                r = accept(stream, &link.identity) => match r {
                    Ok(x) => x,
                    // A peer that leaves mid-handshake (a client process that exits) was not
                    // refused: nothing to warn about.
                    Err(HandshakeError::Closed) => {
                        tracing::debug!(peer_addr = %addr, "peer left during the handshake");
                        return;
                    }
                    Err(HandshakeError::Io(e)) if peer_gone(&e) => {
                        tracing::debug!(peer_addr = %addr, error = %e, "peer left during the handshake");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(peer_addr = %addr, error = %e, "refused peer: handshake failed");
                        return;
                    }
                },
            };
            // Nodes connecting are events of the cluster; clients come and go by the
            // thousand (one per CLI command): their connections are DEBUG noise.
            if peer < CLIENT_ID_MIN {
                tracing::info!(peer_addr = %addr, peer = peer, "peer connected");
            } else {
                tracing::debug!(peer_addr = %addr, client = peer, "client connected");
            }
            serve(io, Id::from(peer as usize), link, addr).await;
        });
    }
}

/// Whether `e` says the peer went away (it reset or closed the connection), rather than
/// that it sent something this side refused.
fn peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// Opens an accepted connection: TLS, the key proof, the peer's credential for its id, all
/// within [`handshake::HANDSHAKE_TIMEOUT`]. Returns the connection (with the handshake's
/// small frame limit; raise it with `codec_mut().set_max_frame_length`) and the peer's id.
pub async fn accept(stream: TcpStream, me: &Identity) -> Result<(Connection, u64), HandshakeError> {
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(handshake::HANDSHAKE_TIMEOUT, async {
        let (stream, binding) = tls::accept(stream, me).await?;
        let cert = stream.peer_certificate().cloned();
        let mut io = Framed::new(stream, handshake::handshake_codec());
        let judge = |peer| tls::check_peer(cert.as_ref(), me, peer);
        let peer = handshake::accept_bound(&mut io, me, &binding, judge).await?;
        Ok((io, peer))
    })
    .await
    .map_err(|_| HandshakeError::TimedOut)?
}

/// Keeps a connection to the node at `addr` open until cancelled, redialing with capped
/// exponential backoff.
pub async fn dial_loop<M>(addr: String, link: Link<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let mut backoff = Backoff::new();
    loop {
        match connect(&addr, &link.identity).await {
            Ok((io, peer)) => {
                tracing::info!(peer_addr = %addr, peer = peer, "connected");
                let remote = io
                    .get_ref()
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                let opened = tokio::time::Instant::now();
                serve(io, Id::from(peer as usize), link.clone(), remote).await;
                if link.cancel.is_cancelled() {
                    return;
                }
                if opened.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff.reset();
                }
                tracing::info!(peer_addr = %addr, peer = peer, "disconnected; redialing");
            }
            Err(e) => {
                if let TransportError::Handshake { .. } = e {
                    tracing::error!(error = %e, "refused by peer or refused peer");
                } else {
                    tracing::debug!(error = %e, "dial failed");
                }
            }
        }
        tokio::select! {
            _ = link.cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Connects to `addr` and opens the connection as [`accept`] does on the other side; returns
/// the connection (with the handshake's small frame limit; raise it with
/// `codec_mut().set_max_frame_length`) and the peer's node id.
pub async fn connect(addr: &str, me: &Identity) -> Result<(Connection, u64), TransportError> {
    let stream = tokio::time::timeout(handshake::HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| TransportError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|source| TransportError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(handshake::HANDSHAKE_TIMEOUT, async {
        let (stream, binding) = tls::dial(stream, me).await?;
        let cert = stream.peer_certificate().cloned();
        let mut io = Framed::new(stream, handshake::handshake_codec());
        let judge = |peer| tls::check_peer(cert.as_ref(), me, peer);
        let peer = handshake::initiate_bound(&mut io, me, &binding, judge).await?;
        Ok((io, peer))
    })
    .await
    .map_err(|_| HandshakeError::TimedOut)
    .and_then(|r| r)
    .map_err(|source| TransportError::Handshake {
        addr: addr.to_string(),
        source,
    })
}

/// Runs an authenticated connection until it closes, a frame fails to decode, or the node
/// stops.
async fn serve<M>(mut io: Connection, peer: Id, link: Link<M>, addr: SocketAddr)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    io.codec_mut().set_max_frame_length(link.max_frame_bytes);
    let (tx, mut rx) = mpsc::channel::<Bytes>(PEER_QUEUE_FRAMES);
    let conn = link.router.register(peer, tx.clone());
    let (mut sink, mut stream) = io.split();
    let writer = async {
        while let Some(frame) = rx.recv().await {
            if let Err(e) = sink.send(frame).await {
                tracing::debug!(%peer, error = %e, "write failed");
                return;
            }
        }
    };
    let reader = async {
        while let Some(frame) = stream.next().await {
            let body = match frame {
                Ok(b) => b,
                // A peer that closes without TLS's close_notify (a client process that
                // exits) closes like a TCP peer: no warning.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                // A peer that died (a reset, not a frame we refused) is not a bad frame.
                Err(e) if peer_gone(&e) => {
                    tracing::debug!(%peer, peer_addr = %addr, error = %e, "peer closed the connection");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%peer, peer_addr = %addr, error = %e, "closing connection: bad frame");
                    return;
                }
            };
            match codec::decode::<Frame<M>>(&body) {
                Err(e) => {
                    tracing::warn!(%peer, peer_addr = %addr, error = %e, "closing connection: frame does not decode");
                    return;
                }
                Ok(Frame::Actor(msg)) => {
                    if link.inbox.send(Input::Msg(peer, msg)).await.is_err() {
                        return; // The node stopped.
                    }
                }
                Ok(Frame::Traced(send, msg)) => {
                    if link
                        .inbox
                        .send(Input::Traced(peer, send, msg))
                        .await
                        .is_err()
                    {
                        return; // The node stopped.
                    }
                }
                Ok(Frame::Query(q)) => {
                    let (reply_tx, reply_rx) = oneshot::channel();
                    if link
                        .inbox
                        .send(Input::Query(peer, q, reply_tx))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let Ok(reply) = reply_rx.await else { return };
                    // The reply frame does not depend on the message type.
                    match codec::encode(&Frame::<()>::Reply(reply), link.max_frame_bytes) {
                        Ok(bytes) => {
                            if tx.send(bytes).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::error!(%peer, error = %e, "reply not sent"),
                    }
                }
                Ok(Frame::Reply(_)) => {
                    // Nodes ask no questions; a stray reply is ignored.
                }
            }
        }
    };
    tokio::select! {
        _ = link.cancel.cancelled() => {}
        _ = writer => {}
        _ = reader => {}
    }
    link.router.unregister(peer, conn);
    if link.cancel.is_cancelled() || (usize::from(peer) as u64) >= CLIENT_ID_MIN {
        tracing::debug!(peer = usize::from(peer), peer_addr = %addr, "connection closed");
    } else {
        tracing::info!(peer = usize::from(peer), peer_addr = %addr, "peer disconnected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_restarts_after_a_reset() {
        let mut b = Backoff::seeded(7);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        // Each delay lies in the upper half of its step; the steps double up to the cap.
        let mut step = BACKOFF_MIN;
        for d in &delays {
            assert!(
                *d >= step / 2 && *d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert!(
            delays
                .iter()
                .all(|d| *d <= BACKOFF_MAX && *d >= BACKOFF_MIN / 2)
        );
        // Grows: the capped delays are far above the first.
        assert!(delays[11] >= BACKOFF_MAX / 2 && delays[0] <= BACKOFF_MIN);
        // Jittered: two dialers with other seeds do not wait in lockstep.
        let mut other = Backoff::seeded(8);
        let theirs: Vec<Duration> = (0..12).map(|_| other.next_delay()).collect();
        assert_ne!(delays, theirs);
        let capped: std::collections::BTreeSet<_> = delays[8..].iter().collect();
        assert!(capped.len() > 1, "the capped delays vary: {capped:?}");
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
