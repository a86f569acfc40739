//! The handshake that opens every connection, before any [`crate::runtime::codec::Frame`] flows.
//!
//! ```text
//!  initiator (dials)                                   acceptor (listens)
//!    Hello{magic, wire version, cluster, incarnation, id, nonce_i}
//!                                                    ──▶  checks magic, version, cluster, incarnation
//!    ◀── Challenge{Hello{.., id, nonce_a}, mac_a}          mac_a = HMAC(key, "acceptor" ‖ transcript)
//!    checks mac_a (does the acceptor know the key?)
//!    Proof{mac_i} ─────────────────────────────────────▶  checks mac_i = HMAC(key, "initiator" ‖ transcript)
//! ```
//!
//! The transcript is both hellos and, over TLS, the session's exporter value
//! ([`crate::runtime::tls::EXPORTER_LABEL`]), so a proof cannot be replayed on another
//! connection (fresh nonces), for another node id, or relayed between two TLS sessions by a
//! man in the middle. Both sides prove the cluster's pre-shared key without sending it. A
//! peer failing any check is refused: the connection closes and the refusing side logs why.
//!
//! The incarnation ([`Incarnation`]) tells two creations of one cluster apart: a store made
//! again with `--init` starts a new cluster under the same id, and the nodes of the old one
//! refuse it (issue 18), as etcd members refuse a peer of another cluster. A node that does
//! not know its cluster's incarnation yet adopts, and saves, the first one a peer entitled to
//! give it proves with the key.

use crate::runtime::codec::{self, CodecError, MAGIC, WIRE_VERSION};
use crate::runtime::tls::{Security, TlsError};
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshake frames are tiny; anything larger is refused.
const HANDSHAKE_FRAME_BYTES_MAX: usize = 256;

/// Who this side of a connection is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The cluster id: nodes of different clusters never talk.
    pub cluster_id: u64,
    /// This node's (or client's) id.
    pub node_id: u64,
    /// The cluster's pre-shared key.
    pub key: Vec<u8>,
    /// How connections are secured (TLS with derived keys unless set).
    pub security: Security,
    /// Which creation of the cluster this side belongs to ([`Incarnation::none`] unless set).
    pub incarnation: Incarnation,
}

/// Saves an adopted incarnation before the connection that brought it is accepted.
type SaveIncarnation = dyn Fn(u64) -> Result<(), String> + Send + Sync;

/// How a node adopts an incarnation: from which peer ids, saved how.
#[derive(Clone)]
struct Adopt {
    save: Arc<SaveIncarnation>,
    from: fn(u64) -> bool,
}

/// Which creation of its cluster a node belongs to: a random non-zero number drawn when the
/// cluster's master store is created (`--init`) and saved with every node's identity, or 0
/// while a node does not know it yet (a slave before it first meets its master, a master
/// rebuilding a lost store before it meets a slave). Two sides that both know one and differ
/// never talk: one of them belongs to a cluster created again under the same id (a master
/// whose store was lost and re-created with `--init` instead of `--recover`).
#[derive(Clone, Default)]
pub struct Incarnation {
    known: Arc<Mutex<u64>>,
    adopt: Option<Adopt>,
}

impl std::fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Incarnation({})", self.get())
    }
}

impl Incarnation {
    /// None known and none adopted: clients, and the protocols that do not use one; the
    /// check then never refuses.
    pub fn none() -> Self {
        Self::default()
    }

    /// `known`, never changed.
    pub fn fixed(known: u64) -> Self {
        Incarnation {
            known: Arc::new(Mutex::new(known)),
            adopt: None,
        }
    }

    /// `known`; while it is 0, the incarnation of the first peer that proves the key and
    /// whose id `from` accepts is saved by `save` and adopted (a failed save refuses that
    /// peer).
    pub fn adopting(
        known: u64,
        from: fn(u64) -> bool,
        save: impl Fn(u64) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Incarnation {
            known: Arc::new(Mutex::new(known)),
            adopt: Some(Adopt {
                save: Arc::new(save),
                from,
            }),
        }
    }

    /// The incarnation this side knows, 0 when none.
    pub fn get(&self) -> u64 {
        *self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The incarnation mismatch with a peer announcing `theirs`, if both know one.
    fn conflict(&self, cluster_id: u64, theirs: u64) -> Result<(), HandshakeError> {
        let ours = self.get();
        if ours != 0 && theirs != 0 && ours != theirs {
            return Err(HandshakeError::Incarnation {
                cluster_id,
                theirs,
                ours,
            });
        }
        Ok(())
    }

    /// Adopts `theirs` from the peer `peer` (which proved the key) when this side knows
    /// none and may take it from that peer.
    fn adopt(&self, cluster_id: u64, peer: u64, theirs: u64) -> Result<(), HandshakeError> {
        let Some(Adopt { save, from }) = &self.adopt else {
            return Ok(());
        };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if *known == 0 && theirs != 0 && from(peer) {
            save(theirs).map_err(HandshakeError::SaveIncarnation)?;
            tracing::info!(
                cluster = cluster_id,
                incarnation = theirs,
                peer,
                "joined the cluster's incarnation"
            );
            *known = theirs;
        } else if *known != 0 && theirs != 0 && *known != theirs {
            // Another connection adopted a different one meanwhile.
            return Err(HandshakeError::Incarnation {
                cluster_id,
                theirs,
                ours: *known,
            });
        }
        Ok(())
    }
}

impl Identity {
    /// Node (or client) `node_id` of cluster `cluster_id` with its key, over TLS with keys
    /// derived from it ([`Security::DerivedKey`]).
    pub fn new(cluster_id: u64, node_id: u64, key: impl Into<Vec<u8>>) -> Self {
        Identity {
            cluster_id,
            node_id,
            key: key.into(),
            security: Security::default(),
            incarnation: Incarnation::none(),
        }
    }

    /// The same identity, its connections secured by `security`.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// The same identity, of the cluster's incarnation `incarnation`.
    pub fn with_incarnation(mut self, incarnation: Incarnation) -> Self {
        self.incarnation = incarnation;
        self
    }
}

/// The first message of each side.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct Hello {
    /// Must be [`MAGIC`].
    pub magic: [u8; 4],
    /// Must be [`WIRE_VERSION`].
    pub wire_version: u16,
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The sender's incarnation of its cluster, 0 when it knows none ([`Incarnation`]).
    pub incarnation: u64,
    /// The sender's node (or client) id.
    pub node_id: u64,
    /// A fresh random nonce.
    pub nonce: [u8; 32],
}

/// The messages of the handshake.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub enum HandshakeMsg {
    /// Initiator → acceptor.
    Hello(Hello),
    /// Acceptor → initiator: its hello and its proof of the key.
    Challenge {
        /// The acceptor's hello.
        hello: Hello,
        /// HMAC-SHA256 proving the acceptor knows the key.
        mac: [u8; 32],
    },
    /// Initiator → acceptor: its proof of the key.
    Proof {
        /// HMAC-SHA256 proving the initiator knows the key.
        mac: [u8; 32],
    },
    /// Acceptor → initiator: the proof holds and the initiator's credential may claim its
    /// id; frames may flow. Without it a refusal after the proof would look like a success
    /// to the initiator.
    Accepted,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed.
    #[error("i/o error during handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection before the handshake was done: it went away, or (seen
    /// by the initiator) it refused this side.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The peer took too long.
    #[error("handshake timed out")]
    TimedOut,
    /// A handshake frame did not decode.
    #[error("bad handshake frame: {0}")]
    Codec(#[from] CodecError),
    /// Not a replicore peer.
    #[error("bad magic bytes {0:?}: not a replicore peer")]
    Magic([u8; 4]),
    /// A different wire version.
    #[error("peer speaks wire version {theirs}, this node speaks {ours}")]
    WireVersion {
        /// The peer's version.
        theirs: u16,
        /// Ours.
        ours: u16,
    },
    /// A different cluster.
    #[error("peer belongs to cluster {theirs}, this node to cluster {ours}")]
    Cluster {
        /// The peer's cluster id.
        theirs: u64,
        /// Ours.
        ours: u64,
    },
    /// Both sides belong to cluster `cluster_id`, but to different creations of it.
    #[error(
        "peer belongs to another creation of cluster {cluster_id} (incarnation {theirs:#018x}, this node's is {ours:#018x}): a store created again with --init starts a new cluster; a master whose store was lost rejoins with --recover"
    )]
    Incarnation {
        /// The cluster id both share.
        cluster_id: u64,
        /// The peer's incarnation.
        theirs: u64,
        /// Ours.
        ours: u64,
    },
    /// The incarnation adopted from a peer could not be saved.
    #[error("could not save the cluster's incarnation: {0}")]
    SaveIncarnation(String),
    /// The acceptor closed after the key proof instead of accepting: it refused this side's
    /// credential for the id it claims.
    #[error(
        "the peer refused this side after the key proof (is its certificate a credential for this id?)"
    )]
    Refused,
    /// The peer's proof of the key is wrong.
    #[error("peer node {node_id} failed to prove the cluster key (wrong key)")]
    WrongKey {
        /// The id the peer claimed.
        node_id: u64,
    },
    /// The peer sent a handshake message out of order.
    #[error("unexpected handshake message")]
    Unexpected,
    /// The TLS handshake failed (e.g. the peer's certificate is unknown, expired or of
    /// another CA, or the peer refused ours).
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// This side's TLS setup could not be used.
    #[error("local TLS setup: {0}")]
    LocalTls(Box<TlsError>),
    /// The peer does not open a TLS handshake (a plain-text peer, or not a replicore peer).
    #[error("peer does not speak TLS (a plain-text peer? this node requires TLS)")]
    NotTls,
    /// The peer opens a TLS handshake, but this node runs plain TCP.
    #[error("peer speaks TLS but this node runs plain TCP (--insecure-plaintext)")]
    PeerWantsTls,
    /// The peer proved the key, but its certificate may not claim the id it claims (a
    /// client's certificate claiming a node's id, one node's claiming another's).
    #[error(
        "peer claims id {node_id} but its certificate (names: {names}) is not a credential for it"
    )]
    Credential {
        /// The id the peer claimed.
        node_id: u64,
        /// The DNS names its certificate carries, comma-separated.
        names: String,
    },
}

fn hello(me: &Identity) -> Hello {
    Hello {
        magic: MAGIC,
        wire_version: WIRE_VERSION,
        cluster_id: me.cluster_id,
        incarnation: me.incarnation.get(),
        node_id: me.node_id,
        nonce: rand::random(),
    }
}

fn check(me: &Identity, peer: &Hello) -> Result<(), HandshakeError> {
    if peer.magic != MAGIC {
        return Err(HandshakeError::Magic(peer.magic));
    }
    if peer.wire_version != WIRE_VERSION {
        return Err(HandshakeError::WireVersion {
            theirs: peer.wire_version,
            ours: WIRE_VERSION,
        });
    }
    if peer.cluster_id != me.cluster_id {
        return Err(HandshakeError::Cluster {
            theirs: peer.cluster_id,
            ours: me.cluster_id,
        });
    }
    Ok(())
}

fn mac(
    key: &[u8],
    role: &[u8],
    initiator: &Hello,
    acceptor: &Hello,
    binding: &[u8],
) -> Hmac<Sha256> {
    // `new_from_slice` accepts keys of any length for HMAC; the error arm cannot happen.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(role);
    for h in [initiator, acceptor] {
        m.update(&h.cluster_id.to_be_bytes());
        m.update(&h.incarnation.to_be_bytes());
        m.update(&h.node_id.to_be_bytes());
        m.update(&h.nonce);
    }
    // Empty on plain TCP, so that transcript is the one of wire version 1 before TLS.
    m.update(binding);
    m
}

fn sign(key: &[u8], role: &[u8], initiator: &Hello, acceptor: &Hello, binding: &[u8]) -> [u8; 32] {
    mac(key, role, initiator, acceptor, binding)
        .finalize()
        .into_bytes()
        .into()
}

fn verify(key: &[u8], role: &[u8], transcript: (&Hello, &Hello, &[u8]), tag: &[u8; 32]) -> bool {
    let (initiator, acceptor, binding) = transcript;
    // Constant-time comparison.
    mac(key, role, initiator, acceptor, binding)
        .verify_slice(tag)
        .is_ok()
}

async fn send<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    msg: &HandshakeMsg,
) -> Result<(), HandshakeError> {
    io.send(codec::encode(msg, HANDSHAKE_FRAME_BYTES_MAX)?)
        .await?;
    Ok(())
}

async fn recv<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
) -> Result<HandshakeMsg, HandshakeError> {
    match io.next().await {
        None => Err(HandshakeError::Closed),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(HandshakeError::Closed)
        }
        Some(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Err(HandshakeError::Closed)
        }
        // In TLS 1.3 a client's certificate is judged after the client's side of the TLS
        // handshake is done: a refusal arrives as an alert on the first read.
        Some(Err(e)) if crate::runtime::tls::is_tls_error(&e) => Err(HandshakeError::Tls(e)),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(body)) => Ok(codec::decode(&body)?),
    }
}

/// Runs the dialing side without a channel binding; returns the acceptor's node id.
pub async fn initiate<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &Identity,
) -> Result<u64, HandshakeError> {
    initiate_bound(io, me, &[], |_| Ok(())).await
}

/// Runs the listening side without a channel binding; returns the initiator's node id.
pub async fn accept<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &Identity,
) -> Result<u64, HandshakeError> {
    accept_bound(io, me, &[], |_| Ok(())).await
}

/// Runs the dialing side, its proofs bound to `binding` (the TLS exporter value both sides
/// computed), the acceptor's claimed id judged by `judge` once it proved the key; waits for
/// the acceptor's own verdict ([`HandshakeMsg::Accepted`]) and returns the acceptor's id.
pub async fn initiate_bound<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &Identity,
    binding: &[u8],
    judge: impl FnOnce(u64) -> Result<(), HandshakeError>,
) -> Result<u64, HandshakeError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mine = hello(me);
        send(io, &HandshakeMsg::Hello(mine.clone())).await?;
        let HandshakeMsg::Challenge { hello: theirs, mac } = recv(io).await? else {
            return Err(HandshakeError::Unexpected);
        };
        check(me, &theirs)?;
        me.incarnation.conflict(me.cluster_id, theirs.incarnation)?;
        // Prove first, then check: so that with mismatched keys both sides see the mismatch
        // and log it, instead of the acceptor seeing a bare close.
        let proof = sign(&me.key, b"initiator", &mine, &theirs, binding);
        send(io, &HandshakeMsg::Proof { mac: proof }).await?;
        if !verify(&me.key, b"acceptor", (&mine, &theirs, binding), &mac) {
            return Err(HandshakeError::WrongKey {
                node_id: theirs.node_id,
            });
        }
        judge(theirs.node_id)?;
        match recv(io).await {
            Ok(HandshakeMsg::Accepted) => {
                me.incarnation
                    .adopt(me.cluster_id, theirs.node_id, theirs.incarnation)?;
                Ok(theirs.node_id)
            }
            Ok(_) => Err(HandshakeError::Unexpected),
            Err(HandshakeError::Closed) => Err(HandshakeError::Refused),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|_| HandshakeError::TimedOut)?
}

/// Runs the listening side, its proofs bound to `binding`, the initiator's claimed id judged
/// by `judge` once it proved the key; tells the initiator it is accepted and returns its id.
pub async fn accept_bound<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &Identity,
    binding: &[u8],
    judge: impl FnOnce(u64) -> Result<(), HandshakeError>,
) -> Result<u64, HandshakeError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let HandshakeMsg::Hello(theirs) = recv(io).await? else {
            return Err(HandshakeError::Unexpected);
        };
        check(me, &theirs)?;
        let mine = hello(me);
        let mac = sign(&me.key, b"acceptor", &theirs, &mine, binding);
        // An incarnation mismatch is refused after this side's hello went out, so that the
        // initiator sees the mismatch and logs it too, instead of a bare close.
        let conflict = me.incarnation.conflict(me.cluster_id, theirs.incarnation);
        send(
            io,
            &HandshakeMsg::Challenge {
                hello: mine.clone(),
                mac,
            },
        )
        .await?;
        conflict?;
        let HandshakeMsg::Proof { mac } = recv(io).await? else {
            return Err(HandshakeError::Unexpected);
        };
        if !verify(&me.key, b"initiator", (&theirs, &mine, binding), &mac) {
            return Err(HandshakeError::WrongKey {
                node_id: theirs.node_id,
            });
        }
        judge(theirs.node_id)?;
        me.incarnation
            .adopt(me.cluster_id, theirs.node_id, theirs.incarnation)?;
        send(io, &HandshakeMsg::Accepted).await?;
        Ok(theirs.node_id)
    })
    .await
    .map_err(|_| HandshakeError::TimedOut)?
}

/// The codec used during the handshake (small frames only).
pub fn handshake_codec() -> LengthDelimitedCodec {
    codec::frame_codec(HANDSHAKE_FRAME_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node_id: u64, key: &[u8]) -> Identity {
        Identity::new(7, node_id, key)
    }

    async fn run(
        a: Identity,
        b: Identity,
    ) -> (Result<u64, HandshakeError>, Result<u64, HandshakeError>) {
        let (x, y) = tokio::io::duplex(4096);
        let mut x = Framed::new(x, handshake_codec());
        let mut y = Framed::new(y, handshake_codec());
        let (r1, r2) = tokio::join!(
            async {
                let r = initiate(&mut x, &a).await;
                drop(x);
                r
            },
            async {
                let r = accept(&mut y, &b).await;
                drop(y);
                r
            }
        );
        (r1, r2)
    }

    #[tokio::test]
    async fn same_key_succeeds() {
        let (i, a) = run(id(5, b"k"), id(0, b"k")).await;
        assert_eq!(i.unwrap(), 0);
        assert_eq!(a.unwrap(), 5);
    }

    #[tokio::test]
    async fn another_creation_of_the_cluster_is_refused_on_both_sides() {
        let (a, b) = (
            id(1, b"k").with_incarnation(Incarnation::fixed(11)),
            id(0, b"k").with_incarnation(Incarnation::fixed(22)),
        );
        let (i, r) = run(a, b).await;
        for (side, theirs, ours) in [(i, 22, 11), (r, 11, 22)] {
            assert!(
                matches!(side, Err(HandshakeError::Incarnation { cluster_id: 7, theirs: t, ours: o }) if t == theirs && o == ours),
                "{side:?}"
            );
        }
        // A side knowing none, or a client announcing none, is never refused for it.
        for (a, b) in [(0, 22), (11, 0), (0, 0), (5, 5)] {
            let (i, r) = run(
                id(1, b"k").with_incarnation(Incarnation::fixed(a)),
                id(0, b"k").with_incarnation(Incarnation::fixed(b)),
            )
            .await;
            assert!(i.is_ok() && r.is_ok(), "{a} {b}: {i:?} {r:?}");
        }
    }

    #[tokio::test]
    async fn an_unknown_incarnation_is_adopted_and_saved_only_from_an_entitled_peer_with_the_key() {
        let saved = Arc::new(Mutex::new(Vec::new()));
        let store = saved.clone();
        let slave = Incarnation::adopting(
            0,
            |peer| peer == 0,
            move |n| {
                store.lock().unwrap().push(n);
                Ok(())
            },
        );
        let me = id(1, b"k").with_incarnation(slave.clone());
        // Not from a peer that fails the key, nor from one it may not take it from.
        let (i, _) = run(
            me.clone(),
            id(0, b"bad").with_incarnation(Incarnation::fixed(9)),
        )
        .await;
        assert!(i.is_err());
        let (i, _) = run(
            me.clone(),
            id(3, b"k").with_incarnation(Incarnation::fixed(9)),
        )
        .await;
        assert!(i.is_ok(), "{i:?}");
        assert_eq!((slave.get(), saved.lock().unwrap().len()), (0, 0));
        // From its master, once: then another creation is refused.
        let (i, _) = run(
            me.clone(),
            id(0, b"k").with_incarnation(Incarnation::fixed(9)),
        )
        .await;
        assert!(i.is_ok(), "{i:?}");
        assert_eq!((slave.get(), saved.lock().unwrap().clone()), (9, vec![9]));
        let (i, _) = run(
            me.clone(),
            id(0, b"k").with_incarnation(Incarnation::fixed(8)),
        )
        .await;
        assert!(
            matches!(
                i,
                Err(HandshakeError::Incarnation {
                    theirs: 8,
                    ours: 9,
                    ..
                })
            ),
            "{i:?}"
        );
        // A save that fails refuses the peer and adopts nothing.
        let failing = Incarnation::adopting(0, |_| true, |_| Err("disk full".into()));
        let (i, _) = run(
            id(1, b"k").with_incarnation(failing.clone()),
            id(0, b"k").with_incarnation(Incarnation::fixed(9)),
        )
        .await;
        assert!(
            matches!(i, Err(HandshakeError::SaveIncarnation(_))),
            "{i:?}"
        );
        assert_eq!(failing.get(), 0);
    }

    #[tokio::test]
    async fn wrong_key_is_refused_on_both_sides() {
        let (i, a) = run(id(5, b"k"), id(0, b"other")).await;
        assert!(
            matches!(i, Err(HandshakeError::WrongKey { node_id: 0 })),
            "{i:?}"
        );
        assert!(
            matches!(a, Err(HandshakeError::WrongKey { node_id: 5 })),
            "{a:?}"
        );
    }
}
