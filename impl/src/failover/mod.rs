//! Protocol 2 (failover approver, seed 002) on the runtime: a server runs the model's
//! `FailoverNode` with the generic [`Driver`](crate::runtime::driver::Driver) over the authenticated transport and redb; a
//! client runs the model's `FailoverClient` over connections to the master and the backup,
//! so it fails over by the model's own rule. `docs/failover.md` tells the protocol.
//!
//! ```text
//!   client (FailoverClient actor) ──Request──▶ master (node 0) ──Advise──▶ backup (node 1)
//!          ▲   no answer: Retry timer,         ◀──Stored───────────────────┘
//!          │   the other server, "master unable"        heartbeats renew the backup's lease;
//!          └──────────────Reply─────────────── approver  a lapsed lease: backup takes over
//! ```
//!
//! Node ids: the master is 0, the designated backup is 1 (the cluster file's first slave),
//! further slaves follow. A node dials every node of a lower id and accepts the others.

mod client;
pub mod observe;
mod server;

pub use client::{Client, FailoverClientError, digest, role_of, role_of_secured};
pub use server::{
    FailoverServer, Server, ServerConfig, ServerError, ServerView, Storage, TraceMeta, WireMsg,
    check_trace, server_actor,
};
