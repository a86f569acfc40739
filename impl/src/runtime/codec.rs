//! The wire format: length-delimited frames carrying postcard-encoded values.
//!
//! ```text
//!  ┌──────────────┬──────────────────────────────────────────────┐
//!  │ length: u32  │ body: postcard(HandshakeMsg) during the      │
//!  │ big-endian   │ handshake, postcard(Frame<M>) after it       │
//!  └──────────────┴──────────────────────────────────────────────┘
//!    4 bytes        `length` bytes, at most `max_frame_bytes`
//! ```
//!
//! A frame longer than the maximum, or a body that does not decode, is a [`CodecError`]: the
//! connection that carried it is closed. Nothing here panics on any input.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The first bytes of every handshake: "RPLC".
pub const MAGIC: [u8; 4] = *b"RPLC";

/// The version of this wire format; peers with another version are refused.
pub const WIRE_VERSION: u16 = 3;

/// The default largest frame body, in bytes (a snapshot of the whole data travels in one frame).
pub const MAX_FRAME_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// A frame body that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The body is not a valid postcard encoding of the expected type.
    #[error("undecodable frame of {len} bytes: {source}")]
    Decode {
        /// The body length.
        len: usize,
        /// The decoder's complaint.
        source: postcard::Error,
    },
    /// A value could not be encoded (a local bug or an unsupported value).
    #[error("unencodable value: {0}")]
    Encode(postcard::Error),
    /// An encoded value exceeds the maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Everything that travels after the handshake.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub enum Frame<M> {
    /// A message of the protocol actors (`Actor::Msg`), delivered to the receiving actor with
    /// the handshake's node id as its source.
    Actor(M),
    /// A question to the receiving node's runtime (not to the protocol).
    Query(Query),
    /// The answer to a [`Query`].
    Reply(Reply),
    /// [`Frame::Actor`] from a node that records a trace: the message and the id of the
    /// `Send` that produced it, so the receiver's trace names its cause (`crate::runtime::trace`).
    /// Last in the enum, so the encodings of the other variants are unchanged.
    Traced(crate::runtime::trace::SendId, M),
}

/// A question a client asks a node's runtime.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum Query {
    /// Read `key` from the node's committed data.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// The node's version and role.
    Status,
    /// The next request number the master expects from the asking client (its ledger entry),
    /// so that a fresh process can continue a client id's numbering.
    NextReq,
    /// A protocol-2 server's role and epoch (`replicore failover status`). Last, so the
    /// encodings of the other variants are unchanged.
    Role,
    /// A page of a protocol-1 node's committed rows in key order: the first keys after
    /// `after` (from the start when `None`), at most `limit` of them (`replicore dump`).
    /// Last, so the encodings of the other variants are unchanged.
    Scan {
        /// The last key of the previous page.
        after: Option<Vec<u8>>,
        /// The most rows to return.
        limit: u32,
    },
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub enum Reply {
    /// The value at the key, if any, and the committed version it was read at.
    Value {
        /// The version of the data read.
        version: u64,
        /// The value.
        value: Option<Vec<u8>>,
    },
    /// The node's status.
    Status(NodeStatus),
    /// The next request number for the asking client.
    NextReq(u64),
    /// This node cannot answer the query (e.g. `NextReq` on a slave).
    Unsupported,
    /// A protocol-2 server's role and epoch, version and data digest.
    Role {
        /// The node id (0 the master, 1 the backup).
        node_id: u64,
        /// master, backup, approver or slave.
        role: String,
        /// Its approval epoch.
        epoch: u64,
        /// Its version.
        version: u64,
        /// The number of keys.
        keys: u64,
        /// SHA-256 of its data's encoding.
        digest: [u8; 32],
    },
    /// A page of rows (the answer to [`Query::Scan`]), read at one committed version.
    /// Last, so the encodings of the other variants are unchanged.
    Rows {
        /// The committed version the page was read at.
        version: u64,
        /// `(key, value)` in key order.
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        /// Whether rows after the last one remain.
        more: bool,
    },
}

/// What a node reports about itself.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct NodeStatus {
    /// The node id (0 is the master).
    pub node_id: u64,
    /// Whether it is the master.
    pub master: bool,
    /// Its committed version.
    pub version: u64,
    /// The version of a prepared, undecided two-phase update it holds, if any.
    pub prepared: Option<u64>,
    /// The number of keys in its committed data.
    pub keys: u64,
    /// SHA-256 of its committed data's encoding: equal digests at equal versions mean
    /// identical data.
    pub digest: [u8; 32],
}

/// The length-delimited codec with our frame limit.
pub fn frame_codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// Encodes a value as a frame body, refusing bodies above `max_frame_bytes`.
pub fn encode<T: Serialize>(value: &T, max_frame_bytes: usize) -> Result<Bytes, CodecError> {
    let body = postcard::to_allocvec(value).map_err(CodecError::Encode)?;
    if body.len() > max_frame_bytes {
        return Err(CodecError::TooLarge {
            len: body.len(),
            max: max_frame_bytes,
        });
    }
    Ok(Bytes::from(body))
}

/// Decodes a frame body. Trailing bytes are tolerated by postcard, so a body must decode as a
/// whole value of `T`; anything else is an error, never a panic.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(body).map_err(|source| CodecError::Decode {
        len: body.len(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        let msg = (7u64, "k".to_string(), b"v".to_vec());
        let bytes = encode(&Frame::Actor(&msg), 1024).unwrap();
        match decode::<Frame<(u64, String, Vec<u8>)>>(&bytes).unwrap() {
            Frame::Actor(m) => assert_eq!(m, msg),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            encode(&Frame::Actor(&msg), 1),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
