//! Protocol 4's figures and event log, read off a peer's steps (see
//! [`crate::runtime::metrics`]): the commands each step emitted and the journal it left,
//! never its decisions.
//!
//! An `Edited` answer is a local edit executed (its operation and stage); a synchronization
//! message sent is an operation of this peer executed, again after an undo when its attempt
//! is above 1; an entry of the last journal above the new stability line that is no longer at
//! its stage is an operation undone (claim 14); a higher stability line is a truncation. Each
//! is one INFO line.

use super::peer::{Msg, State};
use crate::runtime::metrics::Observer;
use replicore_model::stage_sync::{OpId, Peer};
use stateright::actor::{Command, Out};
use std::collections::HashSet;

/// Local edits this peer executed, counter.
pub const EDITS: &str = "replicore_stage_edits_total";
/// Its operations it executed again after undoing them, counter.
pub const REEXECUTED: &str = "replicore_stage_reexecuted_total";
/// Operations it undid to make room for a higher-priority one, counter.
pub const UNDONE: &str = "replicore_stage_undone_total";
/// Its stage (the journal's length, truncated part included), gauge.
pub const STAGE: &str = "replicore_stage_stage";
/// Its stability line (the stage it truncated its journal at), gauge.
pub const STABLE: &str = "replicore_stage_stable";
/// Messages it holds back (waiting list and redo queue), gauge.
pub const HELD: &str = "replicore_stage_held_messages";

/// A peer's observer.
pub struct PeerObserver {
    node: String,
    /// The journal after the last step, as (stage, operation), and its stability line.
    last: Option<(Vec<(u32, OpId)>, u32)>,
}

impl PeerObserver {
    /// An observer of peer `id`.
    pub fn new(id: u64) -> Self {
        PeerObserver {
            node: id.to_string(),
            last: None,
        }
    }
}

fn journal(state: &State) -> Vec<(u32, OpId)> {
    state
        .journal
        .iter()
        .map(|e| (e.sync.current.stage, e.sync.current.id))
        .collect()
}

impl Observer<Peer<super::peer::Value>> for PeerObserver {
    fn on_commands(&mut self, state: &State, out: &Out<Peer<super::peer::Value>>) {
        let node = self.node.clone();
        let now = journal(state);
        let stable = state.stable();
        if let Some((before, was_stable)) = &self.last {
            let kept: HashSet<&(u32, OpId)> = now.iter().collect();
            let undone = before
                .iter()
                .filter(|e| e.0 > stable && !kept.contains(e))
                .count();
            if undone > 0 {
                metrics::counter!(UNDONE, "node" => node.clone()).increment(undone as u64);
                tracing::info!(
                    undone,
                    stage = state.stage(),
                    "undid operations for a higher-priority one"
                );
            }
            if stable > *was_stable {
                tracing::info!(stable, "stability line moved: journal truncated");
            }
        }
        self.last = Some((now, stable));
        metrics::gauge!(STAGE, "node" => node.clone()).set(f64::from(state.stage()));
        metrics::gauge!(STABLE, "node" => node.clone()).set(f64::from(stable));
        metrics::gauge!(HELD, "node" => node.clone())
            .set((state.waiting.len() + state.redo.len()) as f64);
        let mut announced = HashSet::new();
        for command in out.iter() {
            let Command::Send(_, msg) = command else {
                continue;
            };
            match msg {
                Msg::Edited { id, stage } => {
                    metrics::counter!(EDITS, "node" => node.clone()).increment(1);
                    tracing::info!(operation = %id, stage, "edit executed");
                }
                // One message per other peer: the operation is counted once.
                Msg::Sync(sync)
                    if sync.current.attempt > 1 && announced.insert(sync.current.id) =>
                {
                    metrics::counter!(REEXECUTED, "node" => node.clone()).increment(1);
                    tracing::info!(
                        operation = %sync.current.id,
                        attempt = sync.current.attempt,
                        stage = sync.current.stage,
                        "operation executed again after an undo"
                    );
                }
                _ => {}
            }
        }
    }
}
