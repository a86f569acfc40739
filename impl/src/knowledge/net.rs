//! Online knowledge sync between two running replicas: the same actor steps as a bundle
//! file, carried over one authenticated TCP connection (the handshake of
//! [`crate::runtime::handshake`], then length-delimited postcard frames of the actor's
//! messages, `Frame::Actor(AppMsg::Peer(SyncMsg))`, as the driver encodes them).
//!
//! ```text
//!   replicore sync (destination)                 replicore replica-serve (source)
//!     AppMsg::Pull ─▶ RequestChanges ───────────────▶ actor answers
//!     actor applies ◀── ConveyChanges…, CompleteBundle
//!     (two-way) the source's actor pulls back over the same connection
//! ```
//!
//! A sync ends when this side's pull completed (and, two-way, the peer conveyed the knowledge
//! it learned from us), or fails after [`SYNC_TIMEOUT`]. A frame that fails to decode closes
//! the connection; nothing a peer sends can panic the replica.

use crate::knowledge::replica::{Msg, STEP_FRAMES_MAX};
use crate::knowledge::{LocalReplica, ReplicaError};
use crate::runtime::codec::{self, Frame, MAX_FRAME_BYTES_DEFAULT};
use crate::runtime::handshake::Identity;
use crate::runtime::tls::Security;
use crate::runtime::transport::{self, TransportError};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use replicore_model::knowledge::{AppMsg, ReplicaId, SyncMsg};
use stateright::actor::Id;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How long one sync may take before it is abandoned (its learned knowledge unmerged).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a finished sync waits for its connection to close cleanly.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an online sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Connecting or the handshake failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The local replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The connection failed or closed early.
    #[error("connection to replica {peer}: {detail}")]
    Connection {
        /// The peer.
        peer: u64,
        /// What happened.
        detail: String,
    },
    /// The peer's id is out of range.
    #[error("peer id {0} is out of range")]
    BadPeer(u64),
    /// The sync did not finish in time.
    #[error("sync with replica {0} timed out")]
    TimedOut(u64),
}

/// What a sync did, seen from this replica.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct SyncReport {
    /// Changes received from the peer.
    pub received: usize,
    /// Changes sent to the peer.
    pub sent: usize,
    /// Whether this replica merged the peer's learned knowledge.
    pub learned: bool,
}

type Io = transport::Connection;

/// One connection's end in the replica's router: the frames the actor addresses to `peer`.
struct Conn {
    peer: ReplicaId,
    handle: u64,
    frames: mpsc::Receiver<Bytes>,
}

impl Conn {
    fn open(replica: &LocalReplica, peer: ReplicaId) -> Conn {
        let (tx, frames) = mpsc::channel(STEP_FRAMES_MAX);
        let handle = replica.router().register(Id::from(peer as usize), tx);
        Conn {
            peer,
            handle,
            frames,
        }
    }

    fn close(self, replica: &LocalReplica) {
        replica
            .router()
            .unregister(Id::from(self.peer as usize), self.handle);
    }

    /// Writes what the last step addressed to the peer, as the driver encoded it.
    async fn flush(&mut self, io: &mut Io, report: &mut SyncReport) -> Result<(), SyncError> {
        while let Ok(frame) = self.frames.try_recv() {
            if let Ok(Frame::Actor(m) | Frame::Traced(_, m)) = codec::decode::<Frame<Msg>>(&frame) {
                match m {
                    AppMsg::Peer(SyncMsg::ConveyChanges { .. }) => report.sent += 1,
                    AppMsg::Peer(SyncMsg::ConveyKnowledge { .. }) => report.learned = true,
                    _ => {}
                }
            }
            io.send(frame).await.map_err(|e| SyncError::Connection {
                peer: self.peer,
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// Runs the message loop of one connection until `done` says so or the peer closes.
async fn exchange(
    replica: &mut LocalReplica,
    io: &mut Io,
    conn: &mut Conn,
    mut report: SyncReport,
    done: impl Fn(&LocalReplica, &SyncReport, bool) -> bool,
) -> Result<SyncReport, SyncError> {
    let peer = conn.peer;
    let mut peer_learned = false;
    while !done(replica, &report, peer_learned) {
        let Some(frame) = io.next().await else {
            return Ok(report);
        };
        let frame = frame.map_err(|e| SyncError::Connection {
            peer,
            detail: e.to_string(),
        })?;
        let (send, msg) = match codec::decode::<Frame<Msg>>(&frame) {
            Ok(Frame::Actor(AppMsg::Peer(m))) => (None, m),
            Ok(Frame::Traced(send, AppMsg::Peer(m))) => (Some(send), m),
            // A peer speaks the seed's messages only: never its application's inputs.
            Ok(_) => {
                tracing::warn!(peer, "ignored a message that is not a sync message");
                continue;
            }
            Err(e) => {
                return Err(SyncError::Connection {
                    peer,
                    detail: e.to_string(),
                });
            }
        };
        match &msg {
            SyncMsg::ConveyChanges { .. } => report.received += 1,
            SyncMsg::ConveyKnowledge { .. } => peer_learned = true,
            _ => {}
        }
        replica.deliver(peer, send, AppMsg::Peer(msg)).await?;
        conn.flush(io, &mut report).await?;
    }
    Ok(report)
}

/// Pulls from the replica at `addr` (and, `two_way`, lets it pull back): connects, proves the
/// cluster key, and runs the sync to its end.
pub async fn sync_with(
    replica: &mut LocalReplica,
    addr: &str,
    cluster_id: u64,
    key: &[u8],
    two_way: bool,
) -> Result<SyncReport, SyncError> {
    sync_with_secured(replica, addr, cluster_id, key, Security::default(), two_way).await
}

/// [`sync_with`], its connection secured by `security`.
pub async fn sync_with_secured(
    replica: &mut LocalReplica,
    addr: &str,
    cluster_id: u64,
    key: &[u8],
    security: Security,
    two_way: bool,
) -> Result<SyncReport, SyncError> {
    let me = Identity::new(cluster_id, replica.id(), key).with_security(security);
    let (mut io, peer) = transport::connect(addr, &me).await?;
    if peer > crate::knowledge::MAX_REPLICA_ID {
        return Err(SyncError::BadPeer(peer));
    }
    io.codec_mut().set_max_frame_length(MAX_FRAME_BYTES_DEFAULT);
    let mut conn = Conn::open(replica, peer);
    let run = async {
        let mut report = SyncReport::default();
        replica.open_sync(peer, two_way).await?;
        conn.flush(&mut io, &mut report).await?;
        exchange(
            replica,
            &mut io,
            &mut conn,
            report,
            |r, rep, peer_learned| !r.syncing() && rep.learned && (!two_way || peer_learned),
        )
        .await
    };
    let outcome = tokio::time::timeout(SYNC_TIMEOUT, run).await;
    conn.close(replica);
    // End the connection as a finished sync does (over TLS, with close_notify), so the
    // serving replica sees a sync that ended, not a connection that broke.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, SinkExt::<Bytes>::close(&mut io)).await;
    let report = outcome.map_err(|_| SyncError::TimedOut(peer))??;
    if !report.learned {
        return Err(SyncError::Connection {
            peer,
            detail: "closed before the sync completed".into(),
        });
    }
    Ok(report)
}

/// Serves syncs to peers that connect to `listener`, one connection at a time, until the
/// task is dropped. A peer that fails the handshake or misbehaves is logged and dropped.
pub async fn serve(
    listener: TcpListener,
    replica: LocalReplica,
    cluster_id: u64,
    key: Vec<u8>,
) -> std::io::Result<()> {
    serve_secured(listener, replica, cluster_id, key, Security::default()).await
}

/// [`serve`], its connections secured by `security`.
pub async fn serve_secured(
    listener: TcpListener,
    mut replica: LocalReplica,
    cluster_id: u64,
    key: Vec<u8>,
    security: Security,
) -> std::io::Result<()> {
    let me = Identity::new(cluster_id, replica.id(), key).with_security(security);
    loop {
        let (stream, addr) = listener.accept().await?;
        let (mut io, peer) = match transport::accept(stream, &me).await {
            Ok((io, p)) if p <= crate::knowledge::MAX_REPLICA_ID => (io, p),
            Ok((_, p)) => {
                tracing::warn!(%addr, peer = p, "refused: replica id out of range");
                continue;
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "refused a peer");
                continue;
            }
        };
        io.codec_mut().set_max_frame_length(MAX_FRAME_BYTES_DEFAULT);
        // The peer ends the connection when its sync is done.
        let mut conn = Conn::open(&replica, peer);
        let run = exchange(
            &mut replica,
            &mut io,
            &mut conn,
            SyncReport::default(),
            |_, _, _| false,
        );
        match tokio::time::timeout(SYNC_TIMEOUT, run).await {
            Ok(Ok(r)) => tracing::info!(peer, sent = r.sent, received = r.received, "sync served"),
            Ok(Err(e)) => tracing::warn!(peer, error = %e, "sync failed"),
            Err(_) => tracing::warn!(peer, "sync timed out"),
        }
        conn.close(&replica);
        // An unfinished pull of ours towards that peer is abandoned with the connection.
        if let Err(e) = replica.close_sync().await {
            // A save failed: the replica cannot go on.
            tracing::error!(error = %e, "replica stopped");
            return Err(std::io::Error::other(e.to_string()));
        }
    }
}
