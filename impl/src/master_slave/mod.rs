//! Protocol 1 (master/slave replication, seeds 000 and 001) on the runtime: the model's
//! `MasterServer` and `SlaveServer` on the generic driver ([`node`], the embedding API), a
//! remote client ([`client`]), and the replay of recorded traces through the model
//! ([`conformance`]).

pub mod client;
pub mod conformance;
pub mod node;

pub use node::{Node, NodeConfig, NodeError, UpdateError, View};
