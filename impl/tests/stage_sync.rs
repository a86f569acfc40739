//! Stage-ordered peer sync (protocol 4) over 127.0.0.1: three peers editing concurrently
//! under message delay, reordering and duplication converge to one document, truncate their
//! journals, survive a restart; a user with the wrong key is refused.

mod common;

use replicore_model::stage_sync::Edit;
use replicore_runtime::runtime::faults::FaultPlan;
use replicore_runtime::stage_sync::{self, Client, PeerConfig, PeerHandle, StageError, View};
use std::path::Path;
use std::time::Duration;

const KEY: &[u8] = b"test key";
const CLUSTER: u64 = 4;
/// How long a group may take to converge; it takes well under a second here.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

fn faults(seed: u64) -> FaultPlan {
    FaultPlan {
        seed,
        duplicate: 0.1,
        reorder: 0.3,
        reorder_ms: 60,
        delay_ms: [1, 25],
        ..FaultPlan::default()
    }
}

/// Starts peer `id` of `n` on a fresh port. Peers dial only lower ids, so the addresses of
/// higher ones are never used: peers start in id order.
async fn start(
    dir: &Path,
    id: u64,
    n: usize,
    addrs: &[String],
    plan: Option<FaultPlan>,
) -> PeerHandle {
    let mut all: Vec<String> = addrs.to_vec();
    all.resize(n, "127.0.0.1:1".into());
    stage_sync::spawn(PeerConfig {
        id,
        addrs: all,
        listen: Some("127.0.0.1:0".into()),
        cluster_id: CLUSTER,
        key: KEY.to_vec(),
        security: Default::default(),
        data_dir: dir.join(format!("p{id}")),
        init: true,
        faults: plan,
        trace_dir: Some(dir.join("trace")),
    })
    .await
    .expect("the peer starts")
}

/// Waits until every peer shows the same document of `items` values, holds nothing back and
/// has truncated its whole journal; returns the views.
async fn converged(peers: &[&PeerHandle], items: usize) -> Vec<View> {
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    loop {
        let mut views = Vec::new();
        for p in peers {
            views.push(p.view().await.expect("the peer runs"));
        }
        let done = views.iter().all(|v| {
            v.items == views[0].items
                && v.items.len() == items
                && v.held == 0
                && v.stable == v.stage
        });
        if done {
            return views;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence in {CONVERGE_WITHIN:?}: {views:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_editing_concurrently_under_delay_and_reordering_converge() {
    let dir = tempfile::tempdir().unwrap();
    let mut addrs = Vec::new();
    let mut peers = Vec::new();
    for id in 0..3u64 {
        let p = start(dir.path(), id, 3, &addrs, Some(faults(id + 11))).await;
        addrs.push(p.addr.to_string());
        peers.push(p);
    }
    // Each peer's user makes 6 edits as fast as it can, all three at once: inserts at the
    // front (so the order of operations shows in the document) and one removal each.
    let mut tasks = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let p = p.user();
        tasks.push(tokio::spawn(async move {
            for k in 0..6 {
                let edit = if k == 3 {
                    Edit::Remove { at: 1 }
                } else {
                    Edit::Insert {
                        at: 0,
                        value: format!("p{i}-{k}"),
                    }
                };
                p.edit(edit).await.expect("the edit executes");
                tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let refs: Vec<&PeerHandle> = peers.iter().collect();
    // 15 inserts and 3 removals, each of which removes one value once ordered.
    let views = converged(&refs, 12).await;
    assert_eq!(
        views[0].stage, 18,
        "every operation is executed once: {views:?}"
    );
    for p in peers {
        p.shutdown().await.unwrap();
    }
    // Every step each peer took is a step of the model's actor, with exactly the commands
    // recorded, and every message a peer received was sent to it with that content.
    let traces = dir.path().join("trace");
    let report = stage_sync::check_trace(&traces).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.nodes, 3);
    assert!(report.deliveries > 18 && report.inputs > 18, "{report}");
    // A peer whose recorded operation differs from what the others received is caught.
    let file = traces.join("node-0.0.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"p0-0\"", "\"p0-X\"")).unwrap();
    let err = stage_sync::check_trace(&traces).unwrap_err();
    assert!(err.to_string().contains("no send"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_keeps_its_document_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let p0 = start(dir.path(), 0, 2, &[], None).await;
    let a0 = p0.addr.to_string();
    let p1 = start(dir.path(), 1, 2, std::slice::from_ref(&a0), None).await;
    p1.edit(Edit::Insert {
        at: 0,
        value: "a".into(),
    })
    .await
    .unwrap();
    p0.edit(Edit::Insert {
        at: 9,
        value: "b".into(),
    })
    .await
    .unwrap();
    let before = converged(&[&p0, &p1], 2).await;
    p1.shutdown().await.unwrap();
    // While peer 1 is down, peer 0's user edits; its message is lost, its resend repairs it.
    p0.edit(Edit::Insert {
        at: 9,
        value: "c".into(),
    })
    .await
    .unwrap();
    let p1 = start(dir.path(), 1, 2, std::slice::from_ref(&a0), None).await;
    let restarted = p1.view().await.unwrap();
    assert!(
        restarted.items.starts_with(&before[1].items),
        "{restarted:?}"
    );
    let after = converged(&[&p0, &p1], 3).await;
    assert_eq!(after[0].items, vec!["a", "b", "c"]);
    p0.shutdown().await.unwrap();
    p1.shutdown().await.unwrap();
    // The restarted peer loaded exactly its last save.
    let traces = dir.path().join("trace");
    let report = stage_sync::check_trace(&traces).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.restarts, 1, "{report}");
    // A restart that loads anything else is caught.
    let file = traces.join("node-1.1.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let start = lines[1].replace("\"b\"", "\"z\"");
    assert_ne!(start, lines[1], "the start line holds the saved document");
    lines[1] = &start;
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let err = stage_sync::check_trace(&traces).unwrap_err();
    assert!(err.to_string().contains("not the last save"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_edit_and_show_over_tcp_and_a_wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p0 = start(dir.path(), 0, 2, &[], None).await;
    let a0 = p0.addr.to_string();
    let p1 = start(dir.path(), 1, 2, std::slice::from_ref(&a0), None).await;
    let mut user = Client::connect(&p1.addr.to_string(), CLUSTER, KEY, 1_000)
        .await
        .unwrap();
    let (id, stage) = user
        .edit(Edit::Insert {
            at: 0,
            value: "x".into(),
        })
        .await
        .unwrap();
    assert_eq!((id.origin, id.seq, stage), (1, 1, 1));
    converged(&[&p0, &p1], 1).await;
    let mut other = Client::connect(&a0, CLUSTER, KEY, 1_001).await.unwrap();
    assert_eq!(other.show().await.unwrap().items, vec!["x"]);
    let refused = Client::connect(&a0, CLUSTER, b"wrong key", 1_002).await;
    assert!(
        matches!(refused, Err(StageError::Transport(_))),
        "{:?}",
        refused.err()
    );
    assert_eq!(p0.view().await.unwrap().items, vec!["x"], "nothing changed");
    p0.shutdown().await.unwrap();
    p1.shutdown().await.unwrap();
}

/// Starts peer `id` of the group at `addrs`, listening on its own address.
async fn start_at(dir: &Path, id: u64, addrs: &[String], plan: Option<FaultPlan>) -> PeerHandle {
    stage_sync::spawn(PeerConfig {
        id,
        addrs: addrs.to_vec(),
        listen: Some(addrs[id as usize].clone()),
        cluster_id: CLUSTER,
        key: KEY.to_vec(),
        security: Default::default(),
        data_dir: dir.join(format!("p{id}")),
        init: true,
        faults: plan,
        trace_dir: Some(dir.join("trace")),
    })
    .await
    .expect("the peer starts")
}

/// The edits the chaos users make, each peer `PER_PHASE` per phase.
const PER_PHASE: usize = 6;

/// One user's phase of edits: inserts and removals at random positions, a random pause after
/// each.
async fn chaos_edits(user: stage_sync::LocalUser, peer: u64, phase: usize, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + peer * 10 + phase as u64);
    for k in 0..PER_PHASE {
        let edit = if rng.random_range(0..4) == 0 {
            Edit::Remove {
                at: rng.random_range(0..4),
            }
        } else {
            Edit::Insert {
                at: rng.random_range(0..4),
                value: format!("p{peer}-{phase}-{k}"),
            }
        };
        user.edit(edit).await.expect("the edit executes");
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
    }
}

/// One seed of the stage-sync chaos test (see the test).
async fn stage_chaos(seed: u64) -> Result<String, String> {
    use rand::{Rng, SeedableRng};
    use replicore_runtime::runtime::conformance::read_dir;
    use replicore_runtime::runtime::faults::Partition;
    use replicore_runtime::runtime::trace::{Cmd, Input};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let addrs: Vec<String> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            l.local_addr().expect("local addr").to_string()
        })
        .collect();
    let cut_at = rng.random_range(100..400u64);
    let plan = FaultPlan {
        seed,
        loss: 0.05,
        duplicate: 0.05,
        reorder: 0.1,
        reorder_ms: 30,
        delay_ms: [0, 5],
        epoch_unix_ms: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_millis() as u64,
        ),
        partitions: vec![Partition {
            start_ms: cut_at,
            end_ms: cut_at + rng.random_range(500..1_000),
            isolate: vec![rng.random_range(0..3)],
        }],
        ..FaultPlan::default()
    };
    let mut peers = Vec::new();
    for id in 0..3u64 {
        peers.push(Some(
            start_at(dir.path(), id, &addrs, Some(plan.clone())).await,
        ));
    }
    let users = |peers: &[Option<PeerHandle>]| -> Vec<(u64, stage_sync::LocalUser)> {
        peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i as u64, p.user())))
            .collect()
    };
    // Phase 0: every user edits at once.
    let phase = |users: Vec<(u64, stage_sync::LocalUser)>, n: usize| {
        users
            .into_iter()
            .map(|(i, u)| tokio::spawn(chaos_edits(u, i, n, seed)))
            .collect::<Vec<_>>()
    };
    for t in phase(users(&peers), 0) {
        t.await.map_err(|e| e.to_string())?;
    }
    // Phase 1: one peer stops (what is sent to it meanwhile is lost), the others edit.
    let down = rng.random_range(0..3usize);
    if let Some(p) = peers[down].take() {
        p.shutdown().await.map_err(|e| e.to_string())?;
    }
    for t in phase(users(&peers), 1) {
        t.await.map_err(|e| e.to_string())?;
    }
    // It restarts from its data directory and makes its own phase-1 edits.
    let restarted = start_at(dir.path(), down as u64, &addrs, Some(plan.clone())).await;
    chaos_edits(restarted.user(), down as u64, 1, seed).await;
    peers[down] = Some(restarted);
    let all: Vec<PeerHandle> = peers.into_iter().flatten().collect();
    let refs: Vec<&PeerHandle> = all.iter().collect();
    let ops = 3 * 2 * PER_PHASE;
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    let views = loop {
        let mut views = Vec::new();
        for p in &refs {
            views.push(p.view().await.map_err(|e| e.to_string())?);
        }
        let done = views.iter().all(|v| {
            v.items == views[0].items && v.held == 0 && v.stable == v.stage && v.stage == ops as u32
        });
        if done {
            break views;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("no convergence in {CONVERGE_WITHIN:?}: {views:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for p in all {
        p.shutdown().await.map_err(|e| e.to_string())?;
    }
    // The run replays through the actor, and the model's properties hold on it.
    let traces = dir.path().join("trace");
    let report = stage_sync::check_trace(&traces).map_err(|e| e.to_string())?;
    if report.restarts != 1 || report.properties == 0 {
        return Err(format!("not the run intended: {report}"));
    }
    // The faults happened: a message delivered twice, a message never delivered.
    let nodes =
        read_dir::<stage_sync::Msg, replicore_model::stage_sync::Timer, stage_sync::State>(&traces)
            .map_err(|e| e.to_string())?;
    let mut sent = std::collections::BTreeSet::new();
    let mut delivered = std::collections::BTreeMap::<_, usize>::new();
    for step in nodes.values().flatten().flat_map(|i| &i.steps) {
        if let Input::Msg { send: Some(id), .. } = &step.input {
            *delivered.entry(*id).or_default() += 1;
        }
        for c in &step.out {
            // Sends to a peer, not the answers to users (who are not traced).
            if let Cmd::Send { id, dst, .. } = c
                && *dst < 3
            {
                sent.insert(*id);
            }
        }
    }
    let twice = delivered.values().filter(|n| **n > 1).count();
    let lost = sent.iter().filter(|id| !delivered.contains_key(id)).count();
    if twice == 0 || lost == 0 {
        return Err(format!(
            "no fault showed: {twice} messages delivered twice, {lost} never delivered"
        ));
    }
    Ok(format!(
        "stage-sync chaos seed={seed}: {ops} operations, peer {down} restarted, partition of \
         peer {:?}; {twice} messages delivered twice, {lost} never delivered; converged at \
         stage {} with {} items; {report}",
        plan.partitions[0].isolate,
        views[0].stage,
        views[0].items.len()
    ))
}

/// Chaos, seeded: three peers injecting loss, duplication, delay and reordering into their
/// frames, one of them partitioned for a while, users editing all at once; one peer stops
/// while the others edit and restarts from its data. Then every peer holds every operation
/// once in one journal with one document, and the traces replay through the actor with the
/// model's properties on every state (`stage_sync::check_trace`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loss_partitions_and_a_restart_converge_with_the_models_properties() {
    common::run_seeds(
        "stage-sync chaos",
        "stage_sync",
        Duration::from_secs(60),
        stage_chaos,
    )
    .await;
}
