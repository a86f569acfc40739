//! Protocol 3 (knowledge sync, seed 004) on disk: a [`LocalReplica`] drives the model's
//! `Replica` actor, unchanged, over a redb database, and carries syncs by bundle files
//! ([`bundle`]).
//!
//! ```text
//!   export:  RequestChanges ─▶ actor (source) ─▶ Save ─▶ disk
//!                                           └──▶ ConveyChanges…, CompleteBundle ─▶ bundle file
//!   import:  bundle file (checked whole) ─▶ Pull timer ─▶ actor (destination) opens a session
//!            each message, its session set to that one ─▶ actor ─▶ Save ─▶ disk
//! ```
//!
//! Every save commits durably (redb, fsync) before the step's results are used. The whole
//! replica data is one row: fine for the small replicas this is built for; an incremental
//! layout like protocol 1's is future work.

//!
//! [`net`] carries the same syncs online, over one authenticated TCP connection.

pub mod bundle;
pub mod net;
mod replica;

pub use replica::{
    EXPORT_PEER, FILE_NAME, FORMAT, ImportReport, LocalReplica, MAX_REPLICA_ID, ReplicaError,
};
