//! Protocol 3 (knowledge sync, seed 004) on disk: a [`LocalReplica`] drives the model's
//! `Replica` actor, unchanged, over a redb database, and carries syncs by bundle files
//! ([`bundle`]).
//!
//! ```text
//!   application: write / export / import / sync ─▶ AppMsg from APP ─┐
//!   peer replicas (net, TCP):  AppMsg::Peer(SyncMsg) ────────────────┼─▶ Driver ─▶ AppReplica
//!                                                                    │   (model)   Save first,
//!   answers to APP: Written, Imported, the bundle's messages ◀───────┘             then Send
//! ```
//!
//! The replica runs on the runtime's [`Driver`](crate::runtime::driver::Driver) and
//! storage, as every protocol does: every save is durable (one redb transaction, fsync)
//! before a message of its step leaves, and each item is one row written only when a step
//! changes it ([`ItemRows`]). The application's inputs are the model's (`AppMsg`): the
//! runtime never writes the actor's state.
//!
//! [`net`] carries the same syncs online, over one authenticated TCP connection.

pub mod bundle;
pub mod net;
pub mod observe;
mod replica;

pub use replica::{
    APP, Actor, ItemRows, LocalReplica, MAX_REPLICA_ID, Msg, ReplicaError, STEP_FRAMES_MAX,
    STORAGE_CLUSTER,
};
pub use replica::{TraceMeta, check_trace};
pub use replicore_model::knowledge::ImportReport;
