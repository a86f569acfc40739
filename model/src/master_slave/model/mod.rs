//! The checked system of protocol 1: one master, N slaves and a scripted client under a
//! configurable network and crash bound; the ghost history the properties read; the
//! properties; and symmetry over slaves.
//!
//! Actor ids: the master is 0, slaves are `1..=N`, the client is `N + 1`.
//!
//! - [`config`]: the config, its scripts and [`MasterSlaveConfig::into_model`].
//! - [`any_store`]: the same system on a store of the user's own,
//!   [`AnyStoreConfig::into_model`].
//! - [`system`]: the actors of the checked system and their states.
//! - [`ghost`]: the history the properties read.
//! - [`props`]: the properties.
//! - [`reduce`]: the search reductions: dead messages, symmetry, canonical fingerprints,
//!   the loss jump.
//! - [`suite`]: the configs that together reach every behaviour.
//! - [`words`]: steps, messages and data in the words traces print.

pub mod any_store;
pub mod config;
pub mod ghost;
pub mod props;
pub mod reduce;
pub mod suite;
pub mod system;
pub mod words;

pub use any_store::*;
pub use config::*;
pub use ghost::*;
pub use reduce::*;
pub use system::*;
