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
    ]
}
