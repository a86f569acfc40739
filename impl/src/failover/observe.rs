//! Protocol 2's figures and event log, read off a server's steps (see
//! [`crate::runtime::metrics`]): the commands each step emitted and the state it left, never
//! its decisions.
//!
//! A `Reply` carrying `Written` is an update approved (its version), one carrying `Value` a
//! read answered; a `Delta` sent is a catch-up served; a change of the role or the epoch in
//! the state a step left is a takeover (a backup that became the approver), a deposition (a
//! master that learned of a newer epoch) or a new epoch learned. Each is one INFO line.

use super::server::Server;
use crate::runtime::metrics::Observer;
use replicore_model::failover::msg::Answer;
use replicore_model::failover::{Msg, NodeState, Role};
use stateright::actor::{Command, Out};

/// Updates this server approved (`Written` answers it sent), counter.
pub const UPDATES: &str = "replicore_failover_updates_total";
/// Reads this server answered, counter.
pub const READS: &str = "replicore_failover_reads_total";
/// Catch-ups this server served (`Delta` sent to a node behind), counter.
pub const CATCH_UPS: &str = "replicore_failover_catch_ups_total";
/// Role changes of this server, by the `role` it took, counter.
pub const ROLE_CHANGES: &str = "replicore_failover_role_changes_total";
/// This server's epoch, gauge.
pub const EPOCH: &str = "replicore_failover_epoch";
/// This server's version (updates applied), gauge.
pub const VERSION: &str = "replicore_failover_version";

/// A server's observer.
pub struct ServerObserver {
    node: String,
    /// The role and epoch after the last step, once one was seen.
    last: Option<(Role, u64)>,
}

impl ServerObserver {
    /// An observer of server `node`.
    pub fn new(node: u64) -> Self {
        ServerObserver {
            node: node.to_string(),
            last: None,
        }
    }
}

impl Observer<Server> for ServerObserver {
    fn on_commands(&mut self, state: &NodeState<String, Vec<u8>>, out: &Out<Server>) {
        let node = self.node.clone();
        let now = (state.role, state.epoch);
        if let Some((role, epoch)) = self.last
            && (role, epoch) != now
        {
            if role != state.role {
                metrics::counter!(ROLE_CHANGES, "node" => node.clone(), "role" => state.role.name())
                    .increment(1);
            }
            match (role, state.role) {
                (Role::Backup, Role::Approver) => tracing::info!(
                    epoch = state.epoch,
                    version = state.version(),
                    "took over: the master's lease lapsed, approving alone"
                ),
                (Role::Master, r) if r != Role::Master => tracing::info!(
                    role = r.name(),
                    epoch = state.epoch,
                    "deposed: a newer epoch approves"
                ),
                _ => tracing::info!(
                    from = role.name(),
                    role = state.role.name(),
                    epoch = state.epoch,
                    previous_epoch = epoch,
                    "role or epoch changed"
                ),
            }
        }
        self.last = Some(now);
        metrics::gauge!(EPOCH, "node" => node.clone()).set(state.epoch as f64);
        metrics::gauge!(VERSION, "node" => node.clone()).set(state.version() as f64);
        for command in out.iter() {
            let Command::Send(dst, msg) = command else {
                continue;
            };
            match msg {
                Msg::Reply {
                    op,
                    epoch,
                    answer: Answer::Written { version },
                } => {
                    metrics::counter!(UPDATES, "node" => node.clone()).increment(1);
                    tracing::info!(
                        client = usize::from(*dst),
                        op,
                        epoch,
                        version,
                        "update approved"
                    );
                }
                Msg::Reply {
                    answer: Answer::Value { .. },
                    ..
                } => {
                    metrics::counter!(READS, "node" => node.clone()).increment(1);
                }
                Msg::Delta { from, entries, .. } if !entries.is_empty() => {
                    metrics::counter!(CATCH_UPS, "node" => node.clone()).increment(1);
                    tracing::info!(
                        node = usize::from(*dst),
                        from,
                        updates = entries.len(),
                        "catch-up sent"
                    );
                }
                _ => {}
            }
        }
    }
}
