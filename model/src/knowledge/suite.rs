//! The suite of protocol 3 (see [`crate::suite`]): configs that together reach every
//! message kind, conflict policy and recovery path. Each line says what its config reaches
//! that the others do not.

use super::model::{KnowledgeConfig, Scenario};
use super::msg::ConflictPolicy;
use crate::suite::Case;

/// Every case of protocol 3's suite.
pub fn cases() -> Vec<Case<KnowledgeConfig>> {
    let s = KnowledgeConfig::scenario;
    vec![
        Case::quick(
            s(Scenario::Conflict),
            "concurrent writes of one item: a conflict, the destination wins",
        ),
        Case::quick(
            KnowledgeConfig {
                policy: ConflictPolicy::SourceWins,
                ..s(Scenario::Conflict)
            },
            "the same conflict, the source wins",
        ),
        Case::quick(
            KnowledgeConfig {
                policy: ConflictPolicy::KeepBoth,
                two_way: true,
                sessions: 2,
                ..s(Scenario::Conflict)
            },
            "both kept and resolved by the application; two-way pulls, two sessions",
        ),
        Case::quick(
            s(Scenario::Recovery),
            "a forgotten tombstone: a pull refused for lacking knowledge, full enumeration",
        ),
        Case::quick(
            s(Scenario::Filtered),
            "a filtered pull: learned knowledge limited to the filter",
        ),
        Case::quick(
            s(Scenario::Converge),
            "three replicas in a ring: changes relayed, every order of arrival",
        ),
        Case::quick(
            KnowledgeConfig {
                advertise: true,
                cancel: true,
                ..s(Scenario::Conflict)
            },
            "advertised edits and an application's cancel of an open sync",
        ),
        Case::quick(
            KnowledgeConfig {
                lossy: true,
                max_crashes: 0,
                ..s(Scenario::Conflict)
            },
            "loss: every sync message lost and re-asked",
        )
        .exact(),
        Case::quick(
            KnowledgeConfig {
                disk_faults: 1,
                ..s(Scenario::Conflict)
            },
            "a store lost while its replica is down: created again as a new incarnation, its old bundles and requests still in flight",
        )
        .exact(),
        Case::quick(
            KnowledgeConfig {
                disk_faults: 1,
                ..s(Scenario::Recovery)
            },
            "a lost store where tombstones are forgotten: the replica that forgot them, or the one that recovers by full enumeration, created again",
        )
        .exact(),
        Case::full(
            KnowledgeConfig {
                advertise: true,
                cancel: true,
                disk_faults: 1,
                ..s(Scenario::Conflict)
            },
            "a lost store with advertised edits and cancelled syncs",
        ),
        Case::full(
            KnowledgeConfig {
                disk_faults: 2,
                ..s(Scenario::Conflict)
            },
            "two stores lost in one run: three incarnations' names side by side",
        ),
    ]
}
