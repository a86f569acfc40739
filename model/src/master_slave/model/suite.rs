//! The suite of protocol 1 (see [`crate::suite`]): configs that together reach every
//! behaviour of the protocol. Each line says what its config reaches that the default
//! (1 master, 2 slaves, `1p,2p,rb`, lossy duplicating network, 1 crash, history 1) does not.

use super::{MasterSlaveConfig, NetworkKind, script};
use crate::suite::Case;

fn cfg(slaves: usize, s: &str, crashes: usize) -> MasterSlaveConfig {
    MasterSlaveConfig {
        slaves,
        script: script(s),
        max_crashes: crashes,
        ..MasterSlaveConfig::default()
    }
}

/// Every case of protocol 1's suite.
pub fn cases() -> Vec<Case<MasterSlaveConfig>> {
    let loss_free = |c: MasterSlaveConfig| MasterSlaveConfig { lossy: false, ..c };
    vec![
        Case::quick(
            MasterSlaveConfig::default(),
            "the default: one-phase, two-phase, rollback, a crash of any server, loss",
        ),
        Case::quick(
            cfg(2, "rb,2p,1p", 1),
            "two-phase after a rollback, one-phase after two-phase, crashes around each",
        ),
        Case::quick(
            cfg(2, "2p,2p", 1),
            "two-phase after two-phase: a second vote on top of a decided one",
        ),
        Case::quick(
            cfg(2, "1p,1p", 1),
            "one-phase after one-phase: a slave two behind the history bound needs a snapshot",
        ),
        Case::quick(
            cfg(2, "1p:0=1,1p:0=2,1p:-0", 1),
            "put, overwrite and delete of one key; a snapshot that must remove a key",
        ),
        Case::quick(
            MasterSlaveConfig {
                history_bound: 2,
                ..cfg(2, "1p:0=1,1p:1=2,1p:-0", 1)
            },
            "history 2: deltas composed over two steps, deletes inside a composed delta",
        ),
        Case::quick(
            MasterSlaveConfig {
                clients: 3,
                ..cfg(1, "2p", 0)
            },
            "group commit: three clients' two-phase requests on the same keys share rounds",
        ),
        Case::quick(
            MasterSlaveConfig {
                clients: 3,
                own_keys: true,
                ..cfg(1, "2p", 0)
            },
            "group commit on keys of each client's own: every member's change is visible",
        ),
        Case::quick(
            MasterSlaveConfig {
                clients: 2,
                ..cfg(1, "1p:0=1,2p:0=2", 0)
            },
            "two clients interleave one-phase and two-phase updates on one key",
        ),
        Case::quick(
            cfg(3, "1p,2p", 0),
            "three slaves: votes from a strict majority are not enough",
        ),
        Case::quick(
            MasterSlaveConfig {
                network: NetworkKind::Ordered,
                ..cfg(1, "1p,2p", 1)
            },
            "a FIFO network with loss (TCP with reconnects)",
        ),
        Case::quick(
            MasterSlaveConfig {
                network: NetworkKind::UnorderedNonDuplicating,
                ..cfg(1, "1p,2p", 1)
            },
            "a network that delivers each copy at most once",
        ),
        Case::quick(
            cfg(1, "1p,2p", 2),
            "two servers down at once: the master and its only slave",
        ),
        Case::full(
            MasterSlaveConfig {
                clients: 3,
                ..cfg(1, "2p", 1)
            },
            "group commit with a crash: a group's decision survives the master's restart",
        ),
        Case::full(
            MasterSlaveConfig {
                clients: 3,
                ..cfg(1, "rb", 0)
            },
            "three clients rolling back: a rollback that joins or leaves a group",
        ),
        Case::full(
            cfg(2, "1p,2p,rb,1p", 1),
            "four updates: a one-phase update after a rollback, deeper catch-ups",
        ),
        Case::quick(
            MasterSlaveConfig {
                disk_faults: 1,
                ..cfg(1, "1p,2p", 1)
            },
            "a storage fault: a slave's store lost or found damaged while it is down; it rejoins empty",
        ),
        Case::quick(
            MasterSlaveConfig {
                disk_faults: 2,
                ..cfg(1, "1p,2p", 1)
            },
            "two storage faults: a slave's store fails again while it rebuilds",
        ),
        Case::full(
            MasterSlaveConfig {
                disk_faults: 1,
                ..cfg(1, "1p,2p,rb", 1)
            },
            "a storage fault around a rollback: prepared deltas and decisions lost with the store",
        ),
        Case::quick(
            MasterSlaveConfig {
                disk_faults: 1,
                master_faults: true,
                ..cfg(1, "2p,1p", 1)
            },
            "the master's store lost: it rebuilds from its slave, past every version the slave heard of",
        ),
        Case::full(
            MasterSlaveConfig {
                disk_faults: 1,
                master_faults: true,
                ..cfg(2, "1p,1p", 1)
            },
            "the master's store lost with two slaves: it waits for both, one of them behind",
        ),
        // Small enough to check with every reduction off as well, and audited.
        Case::quick(
            MasterSlaveConfig {
                disk_faults: 1,
                ..loss_free(cfg(2, "1p", 1))
            },
            "exact: dead messages that a storage fault brings back to life, symmetric slaves",
        )
        .exact(),
        Case::quick(
            MasterSlaveConfig {
                disk_faults: 1,
                master_faults: true,
                ..loss_free(cfg(1, "2p", 1))
            },
            "exact: the master's rebuild, with the floors a lost store takes back",
        )
        .exact(),
        Case::quick(
            loss_free(cfg(2, "1p", 1)),
            "exact: symmetric slaves, dead messages and crash recovery, no reduction trusted",
        )
        .exact(),
        Case::quick(
            loss_free(cfg(2, "2p", 0)),
            "exact: the two-phase vote between two symmetric slaves",
        )
        .exact(),
        Case::quick(
            loss_free(cfg(1, "1p:0=1,1p:-0", 1)),
            "exact: a delete and a snapshot that removes a key",
        )
        .exact(),
        Case::quick(
            loss_free(cfg(1, "rb,2p", 1)),
            "exact: two-phase after a rollback",
        )
        .exact(),
        Case::quick(
            MasterSlaveConfig {
                clients: 2,
                ..loss_free(cfg(1, "2p", 0))
            },
            "exact: two clients' two-phase requests queue and group",
        )
        .exact(),
        Case::quick(
            cfg(1, "1p", 0),
            "exact: loss, the loss jump and the liveness graph without reductions",
        )
        .exact(),
    ]
}
