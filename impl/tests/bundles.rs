//! Knowledge sync by bundle files (seed 004, claims 25 and 30): replicas edited while apart
//! converge through bundles applied in any order, any number of times; a damaged bundle
//! changes nothing.

use replicore_model::knowledge::ConflictPolicy;
use replicore_runtime::knowledge::bundle::BundleError;
use replicore_runtime::knowledge::{LocalReplica, ReplicaError};
use std::path::{Path, PathBuf};

async fn open(dir: &Path, id: u64) -> LocalReplica {
    LocalReplica::open(
        &dir.join(format!("r{id}")),
        id,
        ConflictPolicy::default(),
        true,
    )
    .await
    .unwrap()
}

async fn export(r: &mut LocalReplica, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    r.export_bundle(&path, false).await.unwrap();
    path
}

/// Every permutation of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[tokio::test]
async fn three_replicas_edited_apart_converge_after_pairwise_bundles_in_any_order() {
    // Each pairwise exchange: a bundle from one replica applied on another.
    let exchanges = [(0u64, 1u64), (1, 2), (2, 0), (1, 0), (2, 1), (0, 2)];
    for order in permutations(3) {
        let dir = tempfile::tempdir().unwrap();
        let mut rs: Vec<LocalReplica> = Vec::new();
        for i in 0..3 {
            rs.push(open(dir.path(), i).await);
        }
        rs[0].write("a", Some("from 0")).await.unwrap();
        rs[1].write("b", Some("from 1")).await.unwrap();
        rs[2].write("c", Some("from 2")).await.unwrap();
        // Two rounds of every exchange, the rounds in the order given.
        for round in 0..2 {
            for k in &order {
                for (src, dst) in [exchanges[*k], exchanges[*k + 3]] {
                    let name = format!("{src}-{dst}-{round}.bundle");
                    let path = export(&mut rs[src as usize], dir.path(), &name).await;
                    rs[dst as usize].import_bundle(&path).await.unwrap();
                }
            }
        }
        let first = rs[0].data().clone();
        for r in &rs {
            assert_eq!(r.data().knowledge, first.knowledge, "order {order:?}");
            assert_eq!(r.data().values(), first.values(), "order {order:?}");
        }
        assert_eq!(first.values().len(), 3, "{:?}", first.values());
    }
}

#[tokio::test]
async fn a_bundle_imported_twice_or_late_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open(dir.path(), 0).await;
    let mut b = open(dir.path(), 1).await;
    a.write("k", Some("1")).await.unwrap();
    let old = export(&mut a, dir.path(), "old.bundle").await;
    a.write("k", Some("2")).await.unwrap();
    let new = export(&mut a, dir.path(), "new.bundle").await;
    let first = b.import_bundle(&new).await.unwrap();
    assert!(first.learned && first.applied == 1);
    let after = b.data().clone();
    let again = b.import_bundle(&new).await.unwrap();
    assert_eq!(again.applied + again.conflicts + again.obsolete, 0);
    let late = b.import_bundle(&old).await.unwrap();
    assert_eq!(late.applied + late.conflicts + late.obsolete, 0);
    assert_eq!(b.data().items, after.items);
    assert_eq!(b.data().knowledge, after.knowledge);
    assert_eq!(b.data().read(&"k".to_string()), Some(&"2".to_string()));
}

#[tokio::test]
async fn a_truncated_or_tampered_bundle_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open(dir.path(), 0).await;
    let mut b = open(dir.path(), 1).await;
    a.write("k", Some("value")).await.unwrap();
    b.write("mine", Some("x")).await.unwrap();
    let good = export(&mut a, dir.path(), "good.bundle").await;
    let bytes = std::fs::read(&good).unwrap();
    let before = b.data().clone();

    let truncated = dir.path().join("truncated.bundle");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let err = b.import_bundle(&truncated).await.unwrap_err();
    assert!(
        matches!(err, ReplicaError::Bundle(BundleError::Length { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");

    let tampered = dir.path().join("tampered.bundle");
    let mut t = bytes.clone();
    let i = t.len() / 2;
    t[i] ^= 0xff;
    std::fs::write(&tampered, &t).unwrap();
    let err = b.import_bundle(&tampered).await.unwrap_err();
    assert!(
        matches!(err, ReplicaError::Bundle(BundleError::HashMismatch)),
        "{err}"
    );

    assert_eq!(b.data(), &before);
    drop(b);
    // Nothing changed on disk either.
    let reopened = open(dir.path(), 1).await;
    assert_eq!(reopened.data(), &before);
}

#[tokio::test]
async fn a_replica_that_missed_a_forgotten_deletion_needs_a_full_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open(dir.path(), 0).await;
    let mut b = open(dir.path(), 1).await;
    a.write("gone", Some("1")).await.unwrap();
    let early = export(&mut a, dir.path(), "early.bundle").await;
    b.import_bundle(&early).await.unwrap();
    a.write("gone", None).await.unwrap();
    a.forget_tombstones().await.unwrap();
    let partial = export(&mut a, dir.path(), "partial.bundle").await;
    let before = b.data().items.clone();
    let err = b.import_bundle(&partial).await.unwrap_err();
    assert!(
        matches!(err, ReplicaError::MinimumKnowledge { .. }),
        "{err}"
    );
    assert_eq!(b.data().items, before);
    let full = dir.path().join("full.bundle");
    a.export_bundle(&full, true).await.unwrap();
    b.import_bundle(&full).await.unwrap();
    assert_eq!(b.data().read(&"gone".to_string()), None);
    assert_eq!(b.data().values(), a.data().values());
    assert_eq!(b.data().knowledge, a.data().knowledge);
}

/// Runs `replicore ARGS`: its exit code, stdout and stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replicore"))
        .args(args)
        .output()
        .expect("replicore runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_exports_imports_and_refuses_a_truncated_bundle_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let file = dir.path().join("a.bundle");
    let (a, b, file) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        file.to_str().unwrap(),
    );
    let (code, _, err) = run(&[
        "replica-put",
        "--init",
        "--data-dir",
        a,
        "--replica",
        "1",
        "k",
        "v",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&[
        "export-bundle",
        "--data-dir",
        a,
        "--replica",
        "1",
        "--out",
        file,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = run(&[
        "import-bundle",
        "--init",
        "--data-dir",
        b,
        "--replica",
        "2",
        file,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 applied"), "{out}");
    let (_, shown, _) = run(&["replica-show", "--data-dir", b, "--replica", "2"]);
    // The protocol's own command shape shows the same (`replica-show` is its alias).
    let (_, nested, _) = run(&[
        "knowledge-sync",
        "replica-show",
        "--data-dir",
        b,
        "--replica",
        "2",
    ]);
    assert_eq!(nested, shown);
    assert!(
        shown.contains("k = v (r1.") && shown.contains("#1)"),
        "{shown}"
    );

    let bytes = std::fs::read(file).unwrap();
    std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = run(&["import-bundle", "--data-dir", b, "--replica", "2", file]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: bundle file is truncated"), "{err}");
    let (_, after, _) = run(&["replica-show", "--data-dir", b, "--replica", "2"]);
    assert_eq!(after, shown);
}

/// Issue 18: a replica whose store was lost and which was created again with `--init` is a
/// new incarnation. Its changes get ids it never used before, so a peer that holds the old
/// ones applies the new ones instead of taking them for changes it knows (before, the new
/// `r1#1` was dropped by the peer as known: "0 applied"), and its sessions are answered
/// afresh.
#[test]
fn a_replica_created_again_after_its_store_was_lost_reuses_no_change_id() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let trace = dir.path().join("trace");
    let (a_dir, b, trace) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        trace.to_str().unwrap(),
    );
    let put = |key: &str, value: &str| {
        let out = run(&[
            "--json",
            "--trace-dir",
            trace,
            "knowledge-sync",
            "replica-put",
            "--init",
            "--data-dir",
            a_dir,
            "--replica",
            "1",
            key,
            value,
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["change"].as_str().unwrap().to_string()
    };
    let carry = |name: &str| {
        let file = dir.path().join(name);
        let file = file.to_str().unwrap();
        run(&[
            "--trace-dir",
            trace,
            "export-bundle",
            "--data-dir",
            a_dir,
            "--replica",
            "1",
            "--out",
            file,
        ]);
        run(&[
            "--trace-dir",
            trace,
            "import-bundle",
            "--init",
            "--data-dir",
            b,
            "--replica",
            "2",
            file,
        ])
    };
    let old = put("k", "old");
    assert!(carry("first.bundle").contains("1 applied"));
    // The store is lost; the operator creates the replica again.
    std::fs::remove_dir_all(&a).unwrap();
    let new = put("k2", "new");
    assert_ne!(old, new, "a change id was reused");
    assert!(
        new.ends_with("#1"),
        "{new}: the new incarnation counts from 1"
    );
    let report = carry("second.bundle");
    assert!(report.contains("1 applied"), "{report}");
    let shown = run(&["replica-show", "--data-dir", b, "--replica", "2"]);
    assert!(shown.contains(&format!("k = old ({old})")), "{shown}");
    assert!(shown.contains(&format!("k2 = new ({new})")), "{shown}");
    // The run conforms to the model: the replica created again replays as its lost store,
    // and the model's properties hold on every state.
    let report = run(&["--json", "knowledge-sync", "check-trace", trace]);
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["conforms"], true, "{report}");
    assert_eq!(report["storage_faults"], 1, "{report}");
}

#[tokio::test]
async fn a_traced_bundle_exchange_replays_through_the_replica_actor() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("trace");
    let open = |id: u64| {
        let dir = dir.path().join(format!("r{id}"));
        let traces = traces.clone();
        async move {
            LocalReplica::open_traced(&dir, id, ConflictPolicy::default(), true, Some(&traces))
                .await
                .unwrap()
        }
    };
    let (mut a, mut b) = (open(0).await, open(1).await);
    a.write("k", Some("a")).await.unwrap();
    b.write("k", Some("b")).await.unwrap();
    let ab = export(&mut a, dir.path(), "ab.bundle").await;
    let ba = export(&mut b, dir.path(), "ba.bundle").await;
    assert_eq!(b.import_bundle(&ab).await.unwrap().conflicts, 1);
    a.import_bundle(&ba).await.unwrap();
    drop((a, b));
    // A later command on a replica is its next incarnation, from its last save.
    let mut a = open(0).await;
    a.import_bundle(&ba).await.unwrap();
    drop(a);
    let report =
        replicore_runtime::knowledge::check_trace(&traces).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.nodes, report.restarts), (2, 1), "{report}");
    assert!(report.inputs >= 7, "{report}");
    // A recorded import whose outcome differs from the actor's is caught.
    let file = traces.join("node-1.0.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let altered = text.replace("\"conflicts\":1", "\"conflicts\":0");
    assert_ne!(altered, text);
    std::fs::write(&file, altered).unwrap();
    let err = replicore_runtime::knowledge::check_trace(&traces).unwrap_err();
    assert!(err.to_string().contains("commands are not"), "{err}");
}
