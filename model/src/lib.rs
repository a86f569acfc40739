//! replicore's replication protocols, written once as Stateright actors.
//!
//! Every protocol here is a set of pure, deterministic state machines (sans-IO). A step
//! takes the actor's state and one input and produces the next state plus commands:
//!
//! ```text
//!             inputs (facts)                          outputs (commands)
//!   on_start(id, saved storage) ──┐            ┌──▶ Save(storage)      durable first
//!   on_msg(src, msg)         ─────┼─▶ actor ───┼──▶ Send(dst, msg)     then these
//!   on_timeout(timer tag)    ─────┘   state    └──▶ SetTimer / CancelTimer(tag)
//! ```
//!
//! # Driver contract
//! Three drivers run the same steps: Stateright's checker (every interleaving, time
//! abstracted: any set timer may fire at any moment), the tokio runtime in
//! `replicore-runtime` (real sockets, clocks, disk) and unit tests. A driver calls
//! `on_start` once per incarnation (with the last saved storage after a crash), then
//! `on_msg`/`on_timeout` one at a time. It executes a step's commands in order, and a `Save`
//! must be durable before any later `Send` of the same step leaves the node: the model treats
//! a step as atomic, and the runtime keeps that true.
//!
//! # Crate map
//! - [`store`]: the application's data ([`store::Store`]) and its delta algebra.
//! - `laws` (feature `laws`): the store laws, checked on any store.
//! - [`master_slave`]: protocol 1, master/slave replication (seeds 000/001).
//! - [`failover`]: protocol 2, a failover approver (seed 002).
//! - [`knowledge`]: protocol 3, knowledge sync (seed 004).
//! - [`stage_sync`]: protocol 4, stage-ordered peer sync (seed 003).
//! - [`fingerprint`]: the stable hasher the protocols' canonical fingerprints use.
//! - [`suite`]: the suite's tiers and cases; each protocol lists its own.
//! - [`harness`]: one step and its exact commands, for every protocol's transition tests.
//!
//! # Checking a protocol
//! A config builds the checked system; Stateright's checkers (or `replicore-explore`)
//! search it, and every property of the protocol must hold:
//!
//! ```
//! use replicore_model::master_slave::MasterSlaveConfig;
//! use replicore_model::master_slave::model::script;
//! use stateright::{Checker, Model};
//!
//! // One master, one slave, a one-phase then a two-phase update, no crash.
//! let cfg = MasterSlaveConfig {
//!     slaves: 1,
//!     script: script("1p,2p"),
//!     max_crashes: 0,
//!     lossy: false,
//!     ..MasterSlaveConfig::default()
//! };
//! let checker = cfg.into_model().checker().spawn_bfs().join();
//! checker.assert_properties();
//! ```
//!
//! The explorer that searches these models (one pass, canonical fingerprints, the liveness
//! graph, several workers) is the crate `replicore-explore`; this crate does no IO and
//! spawns no thread.
#![warn(missing_docs)]

pub mod failover;
pub mod fingerprint;
pub mod harness;
pub mod knowledge;
#[cfg(any(test, feature = "laws"))]
pub mod laws;
pub mod master_slave;
pub mod stage_sync;
pub mod store;
pub mod suite;
