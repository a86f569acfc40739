//! The real runtime (driver, redb storage, node loop) on the in-memory network with tokio's
//! clock paused: frames dropped at a seeded rate, a slave partitioned, a slave and the master
//! restarted from their directories. After every update every node's exposed state is
//! checked against the committed history (SPEC properties 1, 2 and 6); at the end every
//! slave converges.

use replicore_model::master_slave::Msg;
use replicore_model::store::{KvOp, Store};
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use replicore_runtime::runtime::memnet::MemNet;
use replicore_runtime::{KvStore, Mode, UpdateError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SEED: u64 = 0x2e91_cafe;

async fn start(id: u64, dir: &Path, net: &Arc<MemNet<Msg<KvStore>>>) -> Node {
    let mut cfg = NodeConfig::new(6, "memnet", id, 2, dir.join(format!("node{id}")));
    cfg.init = true;
    cfg.heartbeat = Duration::from_millis(50)..Duration::from_millis(80);
    cfg.history = 4;
    cfg.seed = Some(SEED ^ id);
    Node::start_in(cfg, net).await.expect("node starts")
}

/// The invariants on the nodes' exposed states, checked after every step of the workload.
fn check(
    expected: &BTreeMap<u64, KvStore>,
    master: &Node,
    slaves: &[Option<Node>],
    floor: &mut [u64; 3],
) {
    let m = master.view();
    assert_eq!(
        Some(&m.data),
        expected.get(&m.version),
        "master data at version {}",
        m.version
    );
    for (i, s) in slaves.iter().enumerate() {
        let Some(s) = s else { continue };
        let v = s.view();
        let want = expected
            .get(&v.version)
            .unwrap_or_else(|| panic!("slave {} exposes uncommitted version {}", i + 1, v.version));
        assert_eq!(
            &v.data,
            want,
            "slave {} data at version {}",
            i + 1,
            v.version
        );
        assert!(
            v.version <= m.version,
            "slave {} ahead of the master",
            i + 1
        );
        assert!(v.version >= floor[i + 1], "slave {} went back", i + 1);
        floor[i + 1] = v.version;
    }
    assert!(m.version >= floor[0], "the master went back");
    floor[0] = m.version;
}

/// Runs the workload; returns its trace (each update's outcome).
async fn scenario() -> Vec<String> {
    // A logical-time bound: with the clock paused, time only moves when every task waits.
    tokio::time::timeout(Duration::from_secs(600), async {
        let mut trace = Vec::new();
        let t0 = tokio::time::Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let net = MemNet::<Msg<KvStore>>::new(SEED);
        let mut master = start(MASTER_ID, dir.path(), &net).await;
        let mut slaves = vec![
            Some(start(1, dir.path(), &net).await),
            Some(start(2, dir.path(), &net).await),
        ];

        let mut expected = BTreeMap::from([(0, KvStore::default())]);
        let mut data = KvStore::default();
        let mut floor = [0u64; 3];
        let (mut commits, mut aborts) = (0, 0);
        net.set_drop(150);
        for i in 0..60u32 {
            match i {
                15 => net.cut(MASTER_ID, 2),
                25 => net.cut(MASTER_ID, 1),
                30 => {
                    net.heal();
                    net.set_drop(150);
                }
                35 => slaves[0].take().unwrap().shutdown().await.unwrap(),
                40 => slaves[0] = Some(start(1, dir.path(), &net).await),
                45 => {
                    master.shutdown().await.unwrap();
                    master = start(MASTER_ID, dir.path(), &net).await;
                }
                _ => {}
            }
            let op = if i % 9 == 8 {
                KvOp::Delete(format!("k{}", i % 4))
            } else {
                KvOp::Put(format!("k{}", i % 4), i.to_be_bytes().to_vec())
            };
            let mode = if i % 2 == 0 {
                Mode::TwoPhase { timeout_ms: 2_000 }
            } else {
                Mode::OnePhase
            };
            let outcome = master.update(op.clone(), mode).await;
            trace.push(format!("{i}: {outcome:?} after {:?}", t0.elapsed()));
            match outcome {
                Ok(v) => {
                    let d = data.delta_of(&op);
                    data.apply(&d);
                    expected.insert(v, data.clone());
                    commits += 1;
                }
                Err(UpdateError::TimedOut { .. } | UpdateError::Refused { .. }) => aborts += 1,
                Err(e) => panic!("update {i}: {e}"),
            }
            check(&expected, &master, &slaves, &mut floor);
        }
        eprintln!(
            "{commits} commits, {aborts} aborts, master at version {}",
            master.version()
        );
        assert!(
            commits > 20 && aborts > 0,
            "{commits} commits, {aborts} aborts"
        );

        net.heal();
        let target = master.version();
        for s in slaves.iter().flatten() {
            s.versions().wait_for(|v| *v >= target).await.unwrap();
        }
        check(&expected, &master, &slaves, &mut floor);
        for s in slaves.into_iter().flatten() {
            s.shutdown().await.unwrap();
        }
        master.shutdown().await.unwrap();
        trace
    })
    .await
    .expect("bounded in logical time")
}

#[test]
fn the_runtime_survives_loss_partitions_and_restarts_on_a_paused_clock_and_replays_from_its_seed() {
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(scenario())
    };
    let first = run();
    let second = run();
    assert_eq!(first, second, "same seed, same run");
}
