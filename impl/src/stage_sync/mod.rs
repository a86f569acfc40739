//! Protocol 4 (stage-ordered peer sync, seed 003) on the network and on disk: a peer process
//! drives the model's `Peer` actor, unchanged, over the authenticated TCP transport, and
//! saves its state in a redb database before any message of the step leaves.
//!
//! ```text
//!   peers (TCP, handshake) ──▶ inbox ──┐   node loop, Driver   ┌──▶ Save ─▶ redb (fsync) first
//!   users (Edit/Show, local or TCP) ───┼─▶ Peer actor (model) ─┼──▶ Send ─▶ Router ─▶ peers
//!   the model's Resend timer ──────────┘                       └──▶ answers to the user
//! ```
//!
//! Each peer stores every other peer's address (claim 4) and dials those with a lower id; the
//! others dial it, and one authenticated connection serves both ways. A message sent while a
//! peer is unreachable is lost; the actor's resend timer repairs it.
//!
//! The peer runs on the runtime's [`Driver`](crate::runtime::driver::Driver) and
//! [node loop](crate::runtime::node_loop), as every protocol does: the model's timers (its
//! `Resend` period), save before send and group commit come from there. Storage is the
//! runtime's one database (`replicore.redb`): the journal and the held messages row by row
//! ([`StageRows`]), the rest (document, base, reports) in the `saved` row.

mod client;
pub mod observe;
mod peer;

pub use client::{CLIENT_TIMEOUT, Client};
pub use peer::{
    LocalUser, MAX_PEERS, Msg, PeerConfig, PeerHandle, StageError, StageRows, State, Value, View,
    spawn,
};
pub use peer::{TraceMeta, check_trace};
