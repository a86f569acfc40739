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
//! [`runtime::driver::Driver`] calls `on_start` once per incarnation with the storage last saved in
//! the node's database, then `on_msg` / `on_timeout` one at a time. It executes a step's
//! commands in order and makes a `Save` durable before any later `Send` of the same step
//! leaves the node. Time is real: a `SetTimer(tag, range)` fires after a random duration
//! within `range`. No protocol rule lives here: every decision comes from the actor.
//!
//! # Map
//! ```text
//!   runtime/        generic: knows no protocol
//!     driver          Driver<A: Actor>: on_start/on_msg/on_timeout, save before send,
//!                     group commit, timers; Router (outbound frames by peer id)
//!     transport       accept/dial loops, one task per connection, the node's inbox
//!     handshake       mutual proof of the cluster key     codec    frames (postcard)
//!     storage         Disk: one redb file, incremental rows (UserStore, Durable)
//!     faults          seeded loss/duplication/delay/partitions in the Router
//!     memnet          an in-memory network for deterministic tests
//!     trace           one JSON line per step, for conformance
//!     config          the TOML cluster file
//!   master_slave/   protocol 1: node (embedding API), client, conformance
//!   failover/       protocol 2: server, client
//!   knowledge/      protocol 3: replica on disk, bundle files, online sync (net)
//!   stage_sync/     protocol 4: peer, client
//!   bin/replicore/  the CLI (clap, anyhow): not part of this library's API
//! ```
//!
//! # Embedding protocol 1
//! A master in this process on 127.0.0.1, updated and read through the embedding API (a
//! slave starts the same way, with its id and the master's address):
//!
//! ```
//! use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
//! use replicore_runtime::{KvStore, Mode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let mut cfg = NodeConfig::new(1, "cluster key", MASTER_ID, 0, dir.path().join("master"));
//!     cfg.init = true; // create the store (a node is created once, explicitly)
//!     let master = Node::<KvStore>::start(cfg).await?;
//!     let version = master.put("greeting", "hello", Mode::OnePhase).await?;
//!     assert_eq!(version, 1);
//!     assert_eq!(master.get("greeting"), Some(b"hello".to_vec()));
//!     master.shutdown().await?;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
#![warn(missing_docs)]

pub mod failover;
pub mod knowledge;
pub mod master_slave;
pub mod runtime;
pub mod stage_sync;

pub use master_slave::{Node, NodeConfig, NodeError, UpdateError, View};
pub use replicore_model::master_slave::{AbortReason, Mode};
pub use runtime::storage::{KvStore, UserStore};
