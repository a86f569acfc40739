//! Protocol 4 (stage-ordered peer sync, seed 003) on the network and on disk: a peer process
//! drives the model's `Peer` actor, unchanged, over the authenticated TCP transport, and
//! saves its state in a redb database before any message of the step leaves.
//!
//! ```text
//!   peers (TCP, handshake) ──▶ inbox ──┐                      ┌──▶ Save ─▶ redb (fsync) first
//!   local users (Edit/Show) ───────────┼─▶ Peer actor (model) ┼──▶ Send ─▶ Router ─▶ peers
//!   resend interval ───────────────────┘                      └──▶ replies to the user
//! ```
//!
//! Each peer stores every other peer's address (claim 4) and dials those with a lower id; the
//! others dial it, and one authenticated connection serves both ways. A message sent while a
//! peer is unreachable is lost; the actor's resend timer repairs it.
//!
//! Storage: one redb database per peer (`stage.redb`), the actor's whole state in one row,
//! replaced by one durable write transaction per changing step. Whole, because the state is
//! small by design: the document plus the journal above the stability line (the journal is
//! truncated as the line moves). redb, not a plain file, because it gives the atomic,
//! fsynced replace for free, and the other protocols already use it.

mod client;
mod peer;

pub use client::{CLIENT_TIMEOUT, Client};
pub use peer::{
    FILE_NAME, FORMAT, LocalUser, MAX_PEERS, Msg, PeerConfig, PeerHandle, RESEND_INTERVAL,
    StageError, State, Value, View, spawn,
};
