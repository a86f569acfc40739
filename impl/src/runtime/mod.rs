//! The generic runtime: nothing here knows a protocol. It drives any Stateright actor whose
//! messages, timers and storage are serde types.
//!
//! - [`driver`]: the actor driver (save before send, group commit, timers) and the [`driver::Router`].
//! - [`node_loop`]: the one loop every node task runs (timers first, group commit, queries).
//! - [`transport`], [`tls`], [`handshake`], [`codec`]: TCP, TLS 1.3 under every connection,
//!   the authenticated handshake, the frame format.
//! - [`storage`]: the redb database, [`storage::UserStore`] (plug your own user layer).
//! - [`faults`]: the fault-injecting layer between the driver and the connections.
//! - `memnet` (the `testing` feature): an in-memory network with injected faults, for
//!   deterministic tests.
//! - [`trace`]: trace recording; [`conformance`]: reading traces and replaying each node's
//!   steps through its actor.
//! - [`config`]: the TOML cluster file.
//! - [`metrics`]: the metrics a node reports, the [`metrics::Observer`] hook that reads
//!   them off the actor's steps, the `/metrics` and `/health` endpoint.

pub mod codec;
pub mod config;
pub mod conformance;
pub mod driver;
pub mod faults;
pub mod handshake;
#[cfg(feature = "testing")]
pub mod memnet;
pub mod metrics;
pub mod node_loop;
pub mod storage;
pub mod tls;
pub mod trace;
pub mod transport;
