//! Protocol 3's figures and event log, read off a replica's steps (see
//! [`crate::runtime::metrics`]): the commands each step emitted, never its decisions.
//!
//! A `Written` answer is a change made; a `RequestChanges` sent opens a sync this replica
//! pulls; a `CompleteBundle` sent answers one (to [`APP`]: a bundle exported); an
//! `AcknowledgeChange` sent is a change received, by outcome; a `ConveyKnowledge` sent is a
//! sync completed (its learned knowledge merged); a `CancelChangeFlow` sent is a sync
//! cancelled or refused; an `Imported` answer is a bundle file imported. Each is one INFO
//! line.

use super::replica::{APP, Actor};
use crate::runtime::metrics::Observer;
use replicore_model::knowledge::{AppMsg, Applied, ReplicaState, SyncMsg, session_name};
use stateright::actor::{Command, Id, Out};

/// Changes this replica made for the application's writes, counter.
pub const CHANGES_MADE: &str = "replicore_knowledge_changes_made_total";
/// Changes received in syncs and bundles, by `outcome` (`applied`, `obsolete`, `conflict`),
/// counter.
pub const CHANGES_RECEIVED: &str = "replicore_knowledge_changes_received_total";
/// Syncs this replica pulled, by `outcome` (`started`, `completed`, `cancelled`), counter.
pub const SYNCS: &str = "replicore_knowledge_syncs_total";
/// Bundles this replica sent as a source (to a peer or to a file), counter.
pub const BUNDLES_SENT: &str = "replicore_knowledge_bundles_sent_total";

/// A replica's observer.
pub struct ReplicaObserver {
    node: String,
}

impl ReplicaObserver {
    /// An observer of replica `id`.
    pub fn new(id: u64) -> Self {
        ReplicaObserver {
            node: id.to_string(),
        }
    }

    fn peer(id: &Id) -> String {
        let id = usize::from(*id) as u64;
        if id == APP {
            "application".to_string()
        } else {
            id.to_string()
        }
    }
}

impl Observer<Actor> for ReplicaObserver {
    fn on_commands(&mut self, _state: &ReplicaState<String, String>, out: &Out<Actor>) {
        for command in out.iter() {
            let Command::Send(dst, msg) = command else {
                continue;
            };
            let node = self.node.clone();
            match msg {
                AppMsg::Written { id } => {
                    metrics::counter!(CHANGES_MADE, "node" => node).increment(1);
                    tracing::info!(change = %id, "change made");
                }
                AppMsg::Imported(report) => {
                    tracing::info!(
                        changes = report.changes,
                        applied = report.applied,
                        obsolete = report.obsolete,
                        conflicts = report.conflicts,
                        refused = report.refused,
                        "bundle imported"
                    );
                }
                AppMsg::Peer(SyncMsg::RequestChanges {
                    session, recovery, ..
                }) => {
                    metrics::counter!(SYNCS, "node" => node, "outcome" => "started").increment(1);
                    tracing::info!(
                        source = Self::peer(dst),
                        session = session_name(*session),
                        full_enumeration = recovery,
                        "sync started"
                    );
                }
                AppMsg::Peer(SyncMsg::CompleteBundle { session, count, .. }) => {
                    metrics::counter!(BUNDLES_SENT, "node" => node).increment(1);
                    tracing::info!(
                        destination = Self::peer(dst),
                        session = session_name(*session),
                        changes = count,
                        "bundle sent"
                    );
                }
                AppMsg::Peer(SyncMsg::AcknowledgeChange { id, outcome, .. }) => {
                    let kind = match outcome {
                        Applied::Applied { .. } => "applied",
                        Applied::Obsolete { .. } => "obsolete",
                        Applied::Conflict { .. } => "conflict",
                    };
                    metrics::counter!(CHANGES_RECEIVED, "node" => node, "outcome" => kind)
                        .increment(1);
                    if let Applied::Conflict { local, resolution } = outcome {
                        tracing::info!(
                            change = %id,
                            local = %local.id,
                            resolution = resolution.name(),
                            "conflict"
                        );
                    }
                }
                AppMsg::Peer(SyncMsg::ConveyKnowledge { session, knowledge }) => {
                    metrics::counter!(SYNCS, "node" => node, "outcome" => "completed").increment(1);
                    tracing::info!(
                        source = Self::peer(dst),
                        session = session_name(*session),
                        knowledge = %knowledge,
                        "sync completed"
                    );
                }
                AppMsg::Peer(SyncMsg::CancelChangeFlow { session }) => {
                    metrics::counter!(SYNCS, "node" => node, "outcome" => "cancelled").increment(1);
                    tracing::info!(
                        source = Self::peer(dst),
                        session = session_name(*session),
                        "sync cancelled or refused"
                    );
                }
                _ => {}
            }
        }
    }
}
