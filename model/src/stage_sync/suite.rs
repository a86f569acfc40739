//! The suite of protocol 4 (see [`crate::suite`]): configs that together reach every
//! ordering rule, undo and redo, the stability line and every recovery path. Each line says
//! what its config reaches that the others do not.

use super::model::{Scenario, StageConfig};
use crate::suite::Case;

/// Every case of protocol 4's suite.
pub fn cases() -> Vec<Case<StageConfig>> {
    let s = StageConfig::scenario;
    vec![
        Case::quick(
            s(Scenario::Race),
            "two peers race for one stage: the loser is undone and redone",
        ),
        Case::quick(
            s(Scenario::Chain),
            "a chain of two edits, a message two stages early: waiting and requeueing",
        ),
        Case::quick(s(Scenario::Three), "three peers, one order among three"),
        Case::quick(
            s(Scenario::Starve),
            "the lowest peer loses races: aged priorities bound its attempts",
        ),
        Case::quick(
            s(Scenario::Remove),
            "an insert then a remove racing an insert: removal reordered, undone, redone",
        ),
        Case::quick(
            StageConfig {
                lossy: true,
                ..s(Scenario::Race)
            },
            "loss: executions and reports lost and re-sent",
        ),
        Case::quick(
            StageConfig {
                max_crashes: 1,
                ..s(Scenario::Race)
            },
            "a crash: a peer restarts from its saved journal",
        ),
        Case::quick(
            StageConfig {
                max_crashes: 1,
                ..s(Scenario::Chain)
            },
            "a crash in the middle of a chain: recovery of waiting operations",
        ),
    ]
}
