//! The runtime driving the model's actors in one process, through the embedding API: every
//! (version, data) a slave ever exposes equals the master's committed data at that version
//! (SPEC property 1, so also property 2), across two-phase aborts, a rollback and a slave
//! restart from its data directory.

use replicore_model::store::{KvOp, Store};
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use replicore_runtime::{KvStore, Mode, UpdateError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLUSTER: u64 = 3;
const KEY: &str = "embedded";

async fn start(id: u64, slaves: u64, dir: &Path, master_addr: Option<String>) -> Node {
    let mut cfg = NodeConfig::new(CLUSTER, KEY, id, slaves, dir.join(format!("node{id}")));
    cfg.init = true;
    cfg.heartbeat = Duration::from_millis(30)..Duration::from_millis(40);
    cfg.history = 4; // small, so a lagging slave also catches up by snapshot
    if let Some(a) = master_addr {
        cfg.master_addr = a;
    }
    Node::start(cfg).await.expect("node starts")
}

/// Every (version, data) one node published, in order.
type Seen = Arc<Mutex<Vec<(u64, KvStore)>>>;

/// Records every (version, data) a slave publishes.
fn observe(node: &Node, seen: Seen) -> tokio::task::JoinHandle<()> {
    let mut views = node.views();
    tokio::spawn(async move {
        loop {
            let v = views.borrow_and_update().clone();
            seen.lock().unwrap().push((v.version, v.data));
            if views.changed().await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test]
async fn slaves_only_ever_expose_the_masters_committed_states() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let master = start(MASTER_ID, 2, dir.path(), None).await;
        let addr = master.local_addr().to_string();
        let mut slaves = vec![
            start(1, 2, dir.path(), Some(addr.clone())).await,
            start(2, 2, dir.path(), Some(addr.clone())).await,
        ];
        let seen: Vec<Seen> = (0..3).map(|_| Arc::default()).collect();
        let mut observers = vec![
            observe(&slaves[0], seen[1].clone()),
            observe(&slaves[1], seen[2].clone()),
        ];

        // The committed states, rebuilt from the master's answers.
        let mut expected: BTreeMap<u64, KvStore> = BTreeMap::from([(0, KvStore::default())]);
        let mut data = KvStore::default();
        let mut commit = |version: u64, op: KvOp<String, Vec<u8>>| {
            let d = data.delta_of(&op);
            data.apply(&d);
            expected.insert(version, data.clone());
        };

        let mut timed_out_while_down = 0;
        for i in 0..40u32 {
            let op = if i % 7 == 6 {
                KvOp::Delete(format!("k{}", i % 5))
            } else {
                KvOp::Put(format!("k{}", i % 5), i.to_be_bytes().to_vec())
            };
            let mode = if i % 3 == 0 {
                Mode::TwoPhase { timeout_ms: 3000 }
            } else {
                Mode::OnePhase
            };
            if i == 15 {
                // Restart slave 2 from its directory while updates continue.
                let s = slaves.pop().unwrap();
                observers.pop().unwrap().abort();
                s.shutdown().await.unwrap();
            }
            if i == 25 {
                let s = start(2, 2, dir.path(), Some(addr.clone())).await;
                observers.push(observe(&s, seen[2].clone()));
                slaves.push(s);
            }
            match master.update(op.clone(), mode).await {
                Ok(v) => commit(v, op),
                // With slave 2 down, two-phase updates abort at their timeout (and on a
                // starved machine one may time out anyway; either outcome is checked below).
                Err(UpdateError::TimedOut { .. }) => {
                    timed_out_while_down += usize::from((15..25).contains(&i))
                }
                Err(e) => panic!("update {i}: {e}"),
            }
        }
        assert_eq!(
            timed_out_while_down, 4,
            "every two-phase update aborts while a slave is down"
        );
        // A rolled-back update is never visible.
        let ticket = master
            .submit(
                KvOp::Put("rolled".into(), b"back".to_vec()),
                Mode::TwoPhase { timeout_ms: 3000 },
            )
            .await
            .unwrap();
        master.rollback(ticket.req()).await.unwrap();
        match ticket.outcome().await {
            Ok(v) => commit(v, KvOp::Put("rolled".into(), b"back".to_vec())),
            Err(e) => assert!(matches!(e, UpdateError::RolledBack { .. }), "{e}"),
        }

        let target = master.version();
        for s in &slaves {
            s.versions().wait_for(|v| *v >= target).await.unwrap();
        }
        assert_eq!(master.view().data, expected[&target]);
        for (i, seen) in seen.iter().enumerate().skip(1) {
            let seen = seen.lock().unwrap();
            assert!(!seen.is_empty());
            for (version, data) in seen.iter() {
                let want = expected.get(version).unwrap_or_else(|| {
                    panic!("slave {i} exposed version {version}, never committed")
                });
                assert_eq!(data, want, "slave {i} at version {version}");
            }
        }
        for s in slaves {
            s.shutdown().await.unwrap();
        }
        master.shutdown().await.unwrap();
    })
    .await
    .expect("test bounded");
}
