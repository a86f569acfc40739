//! Trace conformance of the real runtime on the in-memory network with tokio's clock paused:
//! 1 master and 3 slaves record their traces while the fault layer loses, duplicates, delays
//! and reorders frames, a link is cut and healed, and a slave and the master restart. The
//! traces must replay through the model's `ActorModel` with every step allowed and every
//! property holding; a trace altered after the fact must not.

use replicore_model::master_slave::Msg;
use replicore_model::store::KvOp;
use replicore_runtime::master_slave::conformance::{self, ConformanceError};
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use replicore_runtime::runtime::faults::FaultPlan;
use replicore_runtime::runtime::memnet::MemNet;
use replicore_runtime::{KvStore, Mode, UpdateError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SEED: u64 = 0x5eed_c0de;
const SLAVES: u64 = 3;

fn plan() -> FaultPlan {
    FaultPlan {
        seed: SEED,
        loss: 0.1,
        duplicate: 0.05,
        reorder: 0.1,
        reorder_ms: 30,
        delay_ms: [0, 5],
        ..FaultPlan::default()
    }
}

async fn start(id: u64, dir: &Path, net: &Arc<MemNet<Msg<KvStore>>>) -> Node {
    let mut cfg = NodeConfig::new(7, "conformance", id, SLAVES, dir.join(format!("node{id}")));
    cfg.init = true;
    cfg.heartbeat = Duration::from_millis(40)..Duration::from_millis(60);
    cfg.history = 4;
    cfg.seed = Some(SEED ^ id);
    cfg.faults = Some(plan());
    cfg.trace_dir = Some(dir.join("trace"));
    Node::start_in(cfg, net).await.expect("node starts")
}

/// Runs a faulty workload with restarts; returns the trace directory's parent and the
/// master's final version.
async fn traced_run() -> (tempfile::TempDir, u64) {
    tokio::time::timeout(Duration::from_secs(600), async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemNet::<Msg<KvStore>>::new(SEED);
        let mut master = start(MASTER_ID, dir.path(), &net).await;
        let mut slaves = Vec::new();
        for id in 1..=SLAVES {
            slaves.push(Some(start(id, dir.path(), &net).await));
        }
        let (mut commits, mut aborts, mut rollbacks) = (0, 0, 0);
        for i in 0..90u32 {
            match i {
                20 => net.cut(MASTER_ID, 2),
                30 => net.heal(),
                40 => slaves[0].take().unwrap().shutdown().await.unwrap(),
                45 => slaves[0] = Some(start(1, dir.path(), &net).await),
                60 => {
                    master.shutdown().await.unwrap();
                    master = start(MASTER_ID, dir.path(), &net).await;
                }
                _ => {}
            }
            let op = if i % 11 == 10 {
                KvOp::Delete(format!("k{}", i % 5))
            } else {
                KvOp::Put(format!("k{}", i % 5), format!("v{}", i % 40).into_bytes())
            };
            let two_phase = Mode::TwoPhase { timeout_ms: 1_000 };
            let outcome = if i % 7 == 3 {
                let ticket = master.submit(op, two_phase).await.unwrap();
                master.rollback(ticket.req()).await.unwrap();
                ticket.outcome().await
            } else {
                let mode = if i % 3 == 0 {
                    two_phase
                } else {
                    Mode::OnePhase
                };
                master.update(op, mode).await
            };
            match outcome {
                Ok(_) => commits += 1,
                Err(UpdateError::RolledBack { .. }) => rollbacks += 1,
                Err(UpdateError::TimedOut { .. } | UpdateError::Refused { .. }) => aborts += 1,
                Err(e) => panic!("update {i}: {e}"),
            }
        }
        assert!(
            commits > 40 && rollbacks > 0,
            "{commits} commits, {rollbacks} rollbacks, {aborts} aborts"
        );
        let target = master.version();
        for s in slaves.iter().flatten() {
            s.versions().wait_for(|v| *v >= target).await.unwrap();
        }
        // Let the last heartbeats be acknowledged, so the run ends quiescent.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for s in slaves.into_iter().flatten() {
            s.shutdown().await.unwrap();
        }
        master.shutdown().await.unwrap();
        (dir, target)
    })
    .await
    .expect("bounded in logical time")
}

fn run_paused<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

fn trace_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("trace")
}

/// Rewrites the first line of `file` for which `edit` returns true.
fn tamper(file: &Path, edit: impl Fn(&mut serde_json::Value) -> bool) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            if !done && edit(&mut v) {
                done = true;
                return serde_json::to_string(&v).unwrap();
            }
            line.to_string()
        })
        .collect();
    assert!(done, "nothing to tamper with in {}", file.display());
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_faulty_run_with_restarts_conforms_and_an_altered_trace_does_not() {
    let (dir, version) = run_paused(traced_run());
    let report = conformance::check_dir(&trace_dir(&dir)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert_eq!(report.restarts, 2, "{report}");
    assert_eq!(report.final_version, version);
    assert!(report.converged, "{report}");
    assert!(report.deliveries > 500 && report.timeouts > 10, "{report}");
    // Every safety property of the model, the end-to-end replay included.
    assert_eq!(report.properties.len(), 8);

    // A slave that claims to have received a Commit of another version than was sent.
    let copy = tempfile::tempdir().unwrap();
    let copy_traces = || {
        let to = copy.path().join("t");
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(trace_dir(&dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        to
    };
    let t = copy_traces();
    tamper(&t.join("node-2.0.jsonl"), |v| {
        let Some(commit) = v.pointer_mut("/input/Msg/msg/Service/Commit/version") else {
            return false;
        };
        *commit = serde_json::json!(commit.as_u64().unwrap() + 1000);
        true
    });
    match conformance::check_dir(&t) {
        Err(ConformanceError::Diverged(d)) => {
            assert!(d.reason.contains("not the one send"), "{d}");
            assert!(d.step.starts_with("node 2 incarnation 0"), "{d}");
        }
        other => panic!("an altered receive must diverge: {other:?}"),
    }

    // A slave that voted without saving its prepared delta.
    let t = copy_traces();
    tamper(&t.join("node-3.0.jsonl"), |v| {
        let Some(out) = v.pointer_mut("/out").and_then(|o| o.as_array_mut()) else {
            return false;
        };
        let votes = out
            .iter()
            .any(|c| c.pointer("/Send/msg/Service/Prepared").is_some());
        if !votes {
            return false;
        }
        out.retain(|c| c.get("Save").is_none());
        true
    });
    match conformance::check_dir(&t) {
        Err(ConformanceError::Diverged(d)) => {
            assert!(d.reason.contains("commands are not the model's"), "{d}");
            assert!(d.commands.is_some(), "{d}");
            eprintln!("{d}");
        }
        other => panic!("a vote without its save must diverge: {other:?}"),
    }

    // A line lost from the middle of a trace.
    let t = copy_traces();
    let file = t.join("node-1.0.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(lines.len() / 2);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    assert!(
        matches!(
            conformance::check_dir(&t),
            Err(ConformanceError::Malformed { .. })
        ),
        "a gap in a trace is refused"
    );
}

/// `bytes` with one bit flipped in every copy of `needle` (redb copies pages on write, so
/// stale copies are flipped too); panics when there is none.
fn flip_all(bytes: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut found = 0;
    for at in 0..bytes.len().saturating_sub(needle.len()) {
        if &bytes[at..at + needle.len()] == needle {
            out[at + needle.len() - 1] ^= 0x01;
            found += 1;
        }
    }
    assert!(
        found > 0,
        "{:?} is not in the file",
        String::from_utf8_lossy(needle)
    );
    out
}

/// Runs updates through the master on keys whose names are long enough to find in a file.
async fn updates(master: &Node, from: u32, n: u32) {
    for i in from..from + n {
        let op = KvOp::Put(
            format!("stored-key-{}", i % 3),
            format!("v{i}").into_bytes(),
        );
        let mode = if i % 2 == 0 {
            Mode::OnePhase
        } else {
            Mode::TwoPhase { timeout_ms: 1_000 }
        };
        match master.update(op, mode).await {
            Ok(_) | Err(UpdateError::TimedOut { .. } | UpdateError::Refused { .. }) => {}
            Err(e) => panic!("update {i}: {e}"),
        }
    }
}

/// A slave's store lost (its directory gone, the node created again) and another's found
/// damaged (a key's bytes flipped in its file): each restart replays as the model's storage
/// fault, every property holds, and the cluster converges. A master started afresh after
/// its store was lost is no run of the model: the replay says so.
#[test]
fn a_slave_store_lost_or_damaged_conforms_as_a_storage_fault_a_master_store_lost_does_not() {
    let (dir, version) = run_paused(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemNet::<Msg<KvStore>>::new(SEED);
        let master = start(MASTER_ID, dir.path(), &net).await;
        let mut slaves = Vec::new();
        for id in 1..=SLAVES {
            slaves.push(start(id, dir.path(), &net).await);
        }
        updates(&master, 0, 12).await;
        let target = master.version();
        for s in &slaves {
            s.versions().wait_for(|v| *v >= target).await.unwrap();
        }
        let third = slaves.pop().unwrap();
        let second = slaves.pop().unwrap();
        let first = slaves.pop().unwrap();
        first.shutdown().await.unwrap();
        second.shutdown().await.unwrap();
        std::fs::remove_dir_all(dir.path().join("node1")).unwrap();
        let file = dir.path().join("node2").join("replicore.redb");
        let damaged = flip_all(&std::fs::read(&file).unwrap(), b"stored-key-1");
        std::fs::write(&file, damaged).unwrap();
        let first = start(1, dir.path(), &net).await;
        let second = start(2, dir.path(), &net).await;
        assert_eq!((first.version(), second.version()), (0, 0));
        updates(&master, 12, 6).await;
        let target = master.version();
        for s in [&first, &second, &third] {
            s.versions().wait_for(|v| *v >= target).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for s in [first, second, third] {
            s.shutdown().await.unwrap();
        }
        master.shutdown().await.unwrap();
        (dir, target)
    });
    let report = conformance::check_dir(&trace_dir(&dir)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert_eq!((report.restarts, report.storage_faults), (2, 2), "{report}");
    assert!(report.converged, "{report}");
    assert_eq!(report.final_version, version, "{report}");
    assert!(version >= 12, "{report}");

    // The master's directory is lost and the master created again: it starts at version 0.
    run_paused(async {
        std::fs::remove_dir_all(dir.path().join("node0")).unwrap();
        let net = MemNet::<Msg<KvStore>>::new(SEED);
        let master = start(MASTER_ID, dir.path(), &net).await;
        assert_eq!(master.version(), 0);
        master.shutdown().await.unwrap();
    });
    match conformance::check_dir(&trace_dir(&dir)) {
        Err(ConformanceError::Diverged(d)) => {
            assert!(d.reason.contains("not the model's saved storage"), "{d}");
            assert!(d.step.starts_with("node 0 incarnation 1"), "{d}");
        }
        other => panic!("a master started afresh must diverge: {other:?}"),
    }
}
