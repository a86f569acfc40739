//! Bundle files: the messages of one knowledge-sync answer, written to a file (the removable
//! medium of seed 004, claims 25 and 30) and applied later on another replica.
//!
//! ```text
//!   magic "RCBNDL01" | payload length (u64, little endian) | payload | SHA-256
//!   payload = postcard(BundleFile { source, messages })
//!   SHA-256 over magic, length and payload
//! ```
//!
//! A file is checked whole (magic, length, hash, shape) before anything is applied: a
//! truncated or altered file is refused with a [`BundleError`] and changes nothing. The hash
//! detects damage, not a forger (anyone can recompute it); bundles are as trusted as the
//! medium that carries them.

use replicore_model::knowledge::{ReplicaId, SyncMsg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first bytes of every bundle file (format version 1).
pub const MAGIC: &[u8; 8] = b"RCBNDL01";

/// The largest payload accepted, in bytes: a bound on what a file can make us allocate.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 30;

const HASH_BYTES: usize = 32;

/// The bundle messages carried by a file.
pub type BundleMsg = SyncMsg<String, String>;

/// One source's answer: its `ConveyChanges` messages then its `CompleteBundle` message.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub struct BundleFile {
    /// The replica that wrote it.
    pub source: ReplicaId,
    /// A full enumeration: every item, for a replica that lacks the minimum knowledge.
    pub full: bool,
    /// The messages, in the order the source sent them.
    pub messages: Vec<BundleMsg>,
}

/// Why a bundle file was refused. Nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read or written.
    #[error("bundle file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not start with the bundle magic.
    #[error("not a replicore bundle file (bad magic)")]
    BadMagic,
    /// The file is shorter or longer than its header says.
    #[error("bundle file is truncated or has trailing bytes: {found} bytes, expected {expected}")]
    Length {
        /// Bytes the header announces (header, payload and hash).
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// The payload does not match its hash.
    #[error("bundle file is damaged or altered: its SHA-256 does not match")]
    HashMismatch,
    /// The payload does not decode.
    #[error("bundle payload does not decode: {0}")]
    Decode(String),
    /// The messages are not one answer (changes then one complete-bundle message).
    #[error("bundle is malformed: {0}")]
    Malformed(&'static str),
}

fn hash(bytes: &[u8]) -> [u8; HASH_BYTES] {
    Sha256::digest(bytes).into()
}

impl BundleFile {
    /// Checks the shape: every message but the last conveys a change, the last completes the
    /// bundle, all carry one session and one source incarnation, positions run from 0, and
    /// the count matches.
    pub fn validate(&self) -> Result<(), BundleError> {
        let Some((last, changes)) = self.messages.split_last() else {
            return Err(BundleError::Malformed("no message"));
        };
        let SyncMsg::CompleteBundle {
            session,
            source,
            count,
            ..
        } = last
        else {
            return Err(BundleError::Malformed(
                "the last message is not CompleteBundle",
            ));
        };
        if replicore_model::knowledge::replica_of(*source) != self.source {
            return Err(BundleError::Malformed(
                "the bundle's messages come from another replica than its source",
            ));
        }
        if *count as usize != changes.len() {
            return Err(BundleError::Malformed(
                "the count does not match the number of changes",
            ));
        }
        for (i, m) in changes.iter().enumerate() {
            match m {
                SyncMsg::ConveyChanges {
                    session: s,
                    source: from,
                    seq,
                    ..
                } if s == session && from == source && *seq as usize == i => {}
                SyncMsg::ConveyChanges { .. } => {
                    return Err(BundleError::Malformed(
                        "a change has another session, source or position",
                    ));
                }
                _ => return Err(BundleError::Malformed("a message is not ConveyChanges")),
            }
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding a Vec of plain data into memory cannot fail.
        let payload = postcard::to_allocvec(self).expect("a bundle encodes");
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + payload.len() + HASH_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        let h = hash(&out);
        out.extend_from_slice(&h);
        out
    }

    /// Decodes and checks a file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<BundleFile, BundleError> {
        let header = MAGIC.len() + 8;
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let found = bytes.len() as u64;
        if bytes.len() < header {
            return Err(BundleError::Length {
                expected: (header + HASH_BYTES) as u64,
                found,
            });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[MAGIC.len()..header]);
        let len = u64::from_le_bytes(len);
        if len > MAX_PAYLOAD_BYTES {
            return Err(BundleError::Malformed("the payload is larger than 1 GiB"));
        }
        let expected = header as u64 + len + HASH_BYTES as u64;
        if found != expected {
            return Err(BundleError::Length { expected, found });
        }
        let body_end = header + len as usize;
        if hash(&bytes[..body_end]) != bytes[body_end..] {
            return Err(BundleError::HashMismatch);
        }
        let file: BundleFile = postcard::from_bytes(&bytes[header..body_end])
            .map_err(|e| BundleError::Decode(e.to_string()))?;
        file.validate()?;
        Ok(file)
    }

    /// Writes the file durably: to a temporary file beside it, fsynced, then renamed.
    pub fn write(&self, path: &Path) -> Result<(), BundleError> {
        let io = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("partial");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&self.encode()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads and checks a file.
    pub fn read(path: &Path) -> Result<BundleFile, BundleError> {
        let meta = std::fs::metadata(path).map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.len() > MAX_PAYLOAD_BYTES + 64 {
            return Err(BundleError::Malformed("the file is larger than 1 GiB"));
        }
        let bytes = std::fs::read(path).map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        BundleFile::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicore_model::knowledge::{Change, ChangeId, Knowledge};

    /// The sample's source: replica 1 in incarnation 7.
    const SOURCE: u64 = 1 | (7 << 32);

    fn sample() -> BundleFile {
        let change = Change {
            id: ChangeId {
                replica: 1,
                counter: 1,
            },
            key: "k".to_string(),
            value: Some("v".to_string()),
            made_with: Knowledge::new(),
        };
        let mut learned = Knowledge::new();
        learned.insert(change.id);
        BundleFile {
            source: 1,
            full: false,
            messages: vec![
                SyncMsg::ConveyChanges {
                    session: 3,
                    source: SOURCE,
                    seq: 0,
                    change,
                    minimum: None,
                },
                SyncMsg::CompleteBundle {
                    session: 3,
                    source: SOURCE,
                    count: 1,
                    learned,
                    filtered_learned: None,
                    forgotten: Knowledge::new(),
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let b = sample();
        assert_eq!(BundleFile::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(BundleFile::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(BundleFile::decode(&b).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn a_bundle_of_two_incarnations_or_of_another_replica_is_malformed() {
        let mut b = sample();
        if let SyncMsg::ConveyChanges { source, .. } = &mut b.messages[0] {
            *source = 1 | (8 << 32);
        }
        assert!(matches!(b.validate(), Err(BundleError::Malformed(_))));
        let mut b = sample();
        b.source = 2;
        assert!(matches!(b.validate(), Err(BundleError::Malformed(_))));
        assert!(sample().validate().is_ok());
    }

    #[test]
    fn a_bundle_whose_count_lies_is_malformed() {
        let mut b = sample();
        b.messages.remove(0);
        assert!(matches!(
            BundleFile::decode(&b.encode()),
            Err(BundleError::Malformed(_))
        ));
    }
}
