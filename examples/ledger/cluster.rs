//! The example's cluster: a master and two slaves of protocol 1 started in this process on
//! 127.0.0.1 with the runtime's embedding API, replicating a [`Ledger`]; a client over TCP
//! posts a few updates to the master and reads a balance back from a slave.

use crate::store::{Ledger, LedgerOp, balance_row};
use replicore_runtime::Mode;
use replicore_runtime::master_slave::client::Client;
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use std::path::Path;
use std::time::Duration;

const CLUSTER_ID: u64 = 20;
const KEY: &[u8] = b"ledger example key";
const SLAVES: u64 = 2;
/// How long the client waits for an update's outcome.
const WAIT: Duration = Duration::from_secs(20);
/// How long a two-phase update waits for the slaves' votes.
const TWO_PHASE: Mode = Mode::TwoPhase { timeout_ms: 10_000 };

/// The updates the client posts, and how: money in, a transfer by two-phase commit, an
/// overdraft the ledger refuses, and a second transfer.
pub fn updates() -> Vec<(LedgerOp, Mode)> {
    let deposit = |account: &str, cents| LedgerOp::Deposit {
        account: account.into(),
        cents,
    };
    let transfer = |from: &str, to: &str, cents| LedgerOp::Transfer {
        from: from.into(),
        to: to.into(),
        cents,
    };
    vec![
        (deposit("alice", 100), Mode::OnePhase),
        (deposit("bob", 50), Mode::OnePhase),
        (transfer("alice", "bob", 30), TWO_PHASE),
        (
            LedgerOp::Withdraw {
                account: "bob".into(),
                cents: 500,
            },
            Mode::OnePhase,
        ),
        (transfer("bob", "carol", 80), TWO_PHASE),
    ]
}

/// What the run ended with.
#[derive(Debug)]
pub struct Outcome {
    /// The version each update committed as, in order.
    pub versions: Vec<u64>,
    /// The master's committed data at the end.
    pub master: Ledger,
    /// Each slave's committed version and data once it caught up.
    pub slaves: Vec<(u64, Ledger)>,
    /// Carol's balance as slave 1 answers a remote read: the version read at and the cents.
    pub carol_on_slave: (u64, Option<u64>),
}

fn config(id: u64, dir: &Path, master_addr: &str) -> NodeConfig {
    let mut cfg = NodeConfig::new(CLUSTER_ID, KEY, id, SLAVES, dir.join(format!("node{id}")));
    // The example creates its stores; a real deployment does this once (`--init`).
    cfg.init = true;
    cfg.master_addr = master_addr.to_string();
    cfg.heartbeat = Duration::from_millis(30)..Duration::from_millis(50);
    cfg
}

/// Runs the cluster in `dir` (one data directory per node), posts [`updates`] and reads
/// them back.
pub async fn scenario(dir: &Path) -> anyhow::Result<Outcome> {
    let master = Node::<Ledger>::start(config(MASTER_ID, dir, "")).await?;
    let addr = master.local_addr().to_string();
    let mut slaves = Vec::new();
    for id in 1..=SLAVES {
        slaves.push(Node::<Ledger>::start(config(id, dir, &addr)).await?);
    }

    let mut client = Client::<Ledger>::connect(&addr, CLUSTER_ID, KEY, None).await?;
    let mut versions: Vec<u64> = Vec::new();
    for (op, mode) in updates() {
        if matches!(mode, Mode::TwoPhase { .. }) {
            // A two-phase update commits only with every slave's vote: wait until each one
            // holds what is committed so far, so none is still connecting.
            let last = versions.last().copied().unwrap_or(0);
            for s in &slaves {
                s.versions().wait_for(|v| *v >= last).await?;
            }
        }
        let (_req, version) = client.update(op, mode, WAIT).await?;
        versions.push(version);
    }

    let last = versions.last().copied().unwrap_or(0);
    let mut caught_up = Vec::new();
    for s in &slaves {
        s.versions().wait_for(|v| *v >= last).await?;
        let view = s.view();
        caught_up.push((view.version, view.data));
    }
    let mut reader =
        Client::<Ledger>::connect(&slaves[0].local_addr().to_string(), CLUSTER_ID, KEY, None)
            .await?;
    let (read_at, carol) = reader.get(&balance_row("carol")).await?;
    let carol = match carol {
        Some(bytes) => Some(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
            |_| anyhow::anyhow!("carol's balance row holds {} bytes, not 8", bytes.len()),
        )?)),
        None => None,
    };

    let outcome = Outcome {
        versions,
        master: master.view().data,
        slaves: caught_up,
        carol_on_slave: (read_at, carol),
    };
    for s in slaves {
        s.shutdown().await?;
    }
    master.shutdown().await?;
    Ok(outcome)
}
