//! replicore's tokio runtime: drives the `replicore-model` actors, unchanged, over TCP,
//! tokio timers and a redb database, and offers them to applications as an embedding API.
//!
//! ```text
//!              ┌──────────────────────────── node (one tokio task) ───────────────────────┐
//!  TCP peers ──┤ transport: handshake, frames ─▶ inbox ─▶ Driver ─▶ actor (model/)          │
//!  (slaves,    │                                          │ on_start / on_msg / on_timeout  │
//!   clients)   │   Router ◀── Send (encoded once) ────────┤                                 │
//!          ◀───┤   Disk   ◀── Save (one redb txn, fsync) ─┤ before any Send of the step     │
//!              │   timers ◀── SetTimer / CancelTimer ─────┘                                 │
//!              └─────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! # Driver contract
//! [`driver::Driver`] calls `on_start` once per incarnation with the storage last saved in
//! the node's database, then `on_msg` / `on_timeout` one at a time. It executes a step's
//! commands in order and makes a `Save` durable before any later `Send` of the same step
//! leaves the node. Time is real: a `SetTimer(tag, range)` fires after a random duration
//! within `range`. No protocol rule lives here: every decision comes from the actor.
//!
//! # Modules
//! - [`node`]: the embedding API ([`node::Node`]).
//! - [`client`]: a remote client (what the `replicore` CLI uses).
//! - [`driver`]: the generic actor driver and the [`driver::Router`].
//! - [`storage`]: the redb database, [`storage::UserStore`] (plug your own user layer).
//! - [`transport`], [`handshake`], [`codec`]: TCP, the handshake, the frame format.
//! - [`memnet`]: an in-memory network with injected faults, for tests.
//! - [`faults`]: the fault-injecting layer between the driver and the connections.
//! - [`trace`]: trace recording; [`conformance`]: replay of traces through the model.
//! - [`config`]: the TOML cluster file.
//! - [`failover`], [`failover_cli`]: protocol 2 (failover approver): servers, a client that
//!   fails over by itself, the `replicore failover` commands.
//! - [`knowledge`], [`bundle`]: protocol 3 (knowledge sync) on disk, and its bundle files.
//! - [`stage_sync`], [`stage_sync_cli`]: protocol 4 (stage-ordered peer sync): peer processes
//!   over TCP, their redb store, the user's client and commands.
#![warn(missing_docs)]

pub mod bundle;
pub mod client;
pub mod codec;
pub mod config;
pub mod conformance;
pub mod driver;
pub mod failover;
pub mod failover_cli;
pub mod faults;
pub mod handshake;
pub mod knowledge;
pub mod knowledge_cli;
pub mod knowledge_net;
pub mod memnet;
pub mod node;
pub mod stage_sync;
pub mod stage_sync_cli;
pub mod storage;
pub mod trace;
pub mod transport;

pub use node::{Node, NodeConfig, NodeError, UpdateError, View};
pub use replicore_model::master_slave::{AbortReason, Mode};
pub use storage::{KvStore, UserStore};
