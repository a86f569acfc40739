//! The runtime under message loss, duplication and a partition: a frame-level proxy between
//! the slaves and the master drops and duplicates whole frames (never the handshake), then
//! cuts the link, then heals. Every state a slave exposes must be one the master committed,
//! and once the link heals every slave converges (the heartbeat repairs every loss).

use futures::{SinkExt, StreamExt};
use replicore_model::store::{KvOp, Store};
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use replicore_runtime::{KvStore, Mode, UpdateError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

const CLUSTER: u64 = 4;
const KEY: &str = "faults";

/// Fault rates, in per mille of frames, changed while the test runs.
#[derive(Default)]
struct Faults {
    drop: AtomicU32,
    duplicate: AtomicU32,
    seed: AtomicU64,
}

impl Faults {
    /// A deterministic pseudo-random draw in 0..1000 (xorshift over a shared seed).
    fn draw(&self) -> u32 {
        let mut x = self.seed.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        (x % 1000) as u32
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(64 << 20)
        .new_codec()
}

/// Copies frames one way, dropping and duplicating them after the first `spared` frames
/// (the handshake).
async fn pump(
    from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    spared: usize,
) {
    let mut from = FramedRead::new(from, codec());
    let mut to = FramedWrite::new(to, codec());
    let mut n = 0;
    while let Some(Ok(frame)) = from.next().await {
        n += 1;
        let frame = frame.freeze();
        if n > spared && faults.draw() < faults.drop.load(Ordering::Relaxed) {
            continue;
        }
        if to.send(frame.clone()).await.is_err() {
            return;
        }
        if n > spared
            && faults.draw() < faults.duplicate.load(Ordering::Relaxed)
            && to.send(frame).await.is_err()
        {
            return;
        }
    }
}

/// A proxy in front of `target`; returns its address.
async fn proxy(target: String, faults: Arc<Faults>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                continue;
            };
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            // Dialer → master: Hello, Proof. Master → dialer: Challenge.
            tokio::spawn(pump(ir, ow, faults.clone(), 2));
            tokio::spawn(pump(or, iw, faults.clone(), 1));
        }
    });
    addr
}

async fn start(id: u64, dir: &Path, master_addr: Option<String>) -> Node {
    let mut cfg = NodeConfig::new(CLUSTER, KEY, id, 2, dir.join(format!("node{id}")));
    cfg.init = true;
    cfg.heartbeat = Duration::from_millis(20)..Duration::from_millis(30);
    cfg.history = 8;
    // The proxy drops and duplicates whole frames, so it must read them: plain TCP. Over TLS
    // a dropped or repeated record closes the connection instead (`impl/tests/tls.rs`).
    cfg.security = replicore_runtime::runtime::tls::Security::Plain;
    if let Some(a) = master_addr {
        cfg.master_addr = a;
    }
    Node::start(cfg).await.expect("node starts")
}

type Seen = Arc<Mutex<Vec<(u64, KvStore)>>>;

fn observe(node: &Node, seen: Seen) {
    let mut views = node.views();
    tokio::spawn(async move {
        loop {
            let v = views.borrow_and_update().clone();
            seen.lock().unwrap().push((v.version, v.data));
            if views.changed().await.is_err() {
                return;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaves_converge_through_loss_duplication_and_a_partition() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults {
            seed: AtomicU64::new(0x5eed),
            ..Faults::default()
        });
        let master = start(MASTER_ID, dir.path(), None).await;
        let via = proxy(master.local_addr().to_string(), faults.clone()).await;
        let slaves = [
            start(1, dir.path(), Some(via.clone())).await,
            start(2, dir.path(), Some(via)).await,
        ];
        let seen: Vec<Seen> = slaves.iter().map(|_| Seen::default()).collect();
        for (s, seen) in slaves.iter().zip(&seen) {
            observe(s, seen.clone());
        }
        // A two-phase update commits only once both slaves are connected and voted.
        let first = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(v) = master
                    .put("hello", "x", Mode::TwoPhase { timeout_ms: 1000 })
                    .await
                {
                    return v;
                }
            }
        })
        .await
        .expect("both slaves connect");

        let mut expected: BTreeMap<u64, KvStore> = BTreeMap::from([(0, KvStore::default())]);
        let mut data = KvStore::default();
        let mut committed = |version: u64, op: &KvOp<String, Vec<u8>>| {
            let d = data.delta_of(op);
            data.apply(&d);
            expected.insert(version, data.clone());
        };
        committed(first, &KvOp::Put("hello".into(), b"x".to_vec()));

        let (mut aborted, mut two_phase_committed) = (0, 0);
        for (phase, drop, duplicate, updates) in
            [("lossy", 200, 100, 40), ("partitioned", 1000, 0, 8)]
        {
            faults.drop.store(drop, Ordering::Relaxed);
            faults.duplicate.store(duplicate, Ordering::Relaxed);
            for i in 0..updates {
                let op = KvOp::Put(format!("{phase}{}", i % 6), format!("{i}").into_bytes());
                let mode = if i % 4 == 0 {
                    Mode::TwoPhase { timeout_ms: 300 }
                } else {
                    Mode::OnePhase
                };
                match master.update(op.clone(), mode).await {
                    Ok(v) => {
                        committed(v, &op);
                        two_phase_committed += usize::from(matches!(mode, Mode::TwoPhase { .. }));
                    }
                    Err(UpdateError::TimedOut { .. } | UpdateError::Refused { .. }) => aborted += 1,
                    Err(e) => panic!("{phase} update {i}: {e}"),
                }
            }
        }
        faults.drop.store(0, Ordering::Relaxed);
        faults.duplicate.store(0, Ordering::Relaxed);
        let target = master.version();
        for s in &slaves {
            tokio::time::timeout(
                Duration::from_secs(30),
                s.versions().wait_for(|v| *v >= target),
            )
            .await
            .unwrap_or_else(|_| panic!("slave {} did not converge after the heal", s.node_id()))
            .unwrap();
        }
        assert!(aborted >= 2, "the partition aborts two-phase updates");
        let _ = two_phase_committed; // Depends on the draws; either outcome is correct.
        assert_eq!(master.view().data, expected[&target]);
        for (i, seen) in seen.iter().enumerate() {
            for (version, data) in seen.lock().unwrap().iter() {
                let want = expected.get(version).unwrap_or_else(|| {
                    panic!("slave {} exposed uncommitted version {version}", i + 1)
                });
                assert_eq!(data, want, "slave {} at version {version}", i + 1);
            }
        }
    })
    .await
    .expect("test bounded");
}
