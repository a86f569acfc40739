//! The suite of protocol 2 (see [`crate::suite`]): configs that together reach every
//! message kind, role transition and recovery path. Each line says what its config reaches
//! that the default (fenced, `w1,w2`, loss-free duplicating network, 1 crash) does not.

use super::model::{FailoverConfig, try_script};
use crate::suite::Case;

fn with(script: &str, slaves: usize, lossy: bool, crashes: usize) -> FailoverConfig {
    FailoverConfig {
        script: try_script(script).expect("a valid built-in script"),
        slaves,
        lossy,
        max_crashes: crashes,
        ..FailoverConfig::default()
    }
}

/// Every case of protocol 2's suite.
pub fn cases() -> Vec<Case<FailoverConfig>> {
    vec![
        Case::quick(
            FailoverConfig::default(),
            "the default: takeover on a lapsed lease, a returning master rejoins by delta",
        ),
        Case::quick(
            with("w1,r", 0, false, 1),
            "a read after a write across a takeover: linearizable reads",
        ),
        Case::quick(
            with("w1,d", 0, false, 1),
            "a delete after a write: a delete replicated, rejoined and read back",
        ),
        Case::quick(
            with("w1", 0, true, 0),
            "loss: every message kind lost and re-sent, the liveness graph under loss",
        ),
        Case::quick(
            with("w1", 1, false, 1),
            "a further slave beside the backup: advice to a slave, a slave's catch-up",
        ),
        Case::full(
            with("w1,w2,r", 0, false, 1),
            "two writes then a read, with a crash anywhere: the longest history checked",
        ),
    ]
}
