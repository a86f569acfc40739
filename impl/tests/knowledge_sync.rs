//! Online knowledge sync (`replicore sync`) between replicas over 127.0.0.1: two-way syncs
//! converge, a wrong key is refused.

mod common;

use replicore_model::knowledge::ConflictPolicy;
use replicore_runtime::knowledge::LocalReplica;
use replicore_runtime::knowledge::net::{SyncError, serve, sync_with};
use std::path::Path;
use std::time::Duration;

const KEY: &[u8] = b"test key";

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

/// Serves replica `id` on a fresh port; returns its address and the server task.
async fn serving(
    dir: &Path,
    id: u64,
    edits: &[(&str, &str)],
) -> (String, tokio::task::JoinHandle<()>) {
    let mut r = open(dir, id).await;
    for (k, v) in edits {
        r.write(k, Some(v)).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let _ = serve(listener, r, 7, KEY.to_vec()).await;
    });
    (addr, task)
}

#[tokio::test]
async fn a_two_way_sync_converges_both_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = serving(dir.path(), 1, &[("b", "from 1")]).await;
    let mut a = open(dir.path(), 0).await;
    a.write("a", Some("from 0")).await.unwrap();
    let report = sync_with(&mut a, &addr, 7, KEY, true).await.unwrap();
    assert_eq!((report.received, report.sent), (1, 1), "{report:?}");
    assert_eq!(a.data().values().len(), 2);
    // The server's replica learned ours: a second sync brings nothing either way.
    let again = sync_with(&mut a, &addr, 7, KEY, true).await.unwrap();
    assert_eq!((again.received, again.sent), (0, 0), "{again:?}");
    server.abort();
    let _ = server.await;
    let b = open(dir.path(), 1).await;
    assert_eq!(b.data().values(), a.data().values());
    assert_eq!(b.data().knowledge, a.data().knowledge);
}

#[tokio::test]
async fn three_replicas_converge_through_pairwise_online_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (addr1, s1) = serving(dir.path(), 1, &[("one", "1")]).await;
    let (addr2, s2) = serving(dir.path(), 2, &[("two", "2")]).await;
    let mut r0 = open(dir.path(), 0).await;
    r0.write("zero", Some("0")).await.unwrap();
    // 0 ↔ 1, 0 ↔ 2, 0 ↔ 1: everyone has everything.
    for addr in [&addr1, &addr2, &addr1] {
        sync_with(&mut r0, addr, 7, KEY, true).await.unwrap();
    }
    for s in [s1, s2] {
        s.abort();
        let _ = s.await;
    }
    let (r1, r2) = (open(dir.path(), 1).await, open(dir.path(), 2).await);
    assert_eq!(r0.data().values().len(), 3);
    for r in [&r1, &r2] {
        assert_eq!(r.data().values(), r0.data().values());
        assert_eq!(r.data().knowledge, r0.data().knowledge);
    }
}

#[tokio::test]
async fn a_peer_with_the_wrong_key_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = serving(dir.path(), 1, &[("b", "x")]).await;
    let mut a = open(dir.path(), 0).await;
    let before = a.data().clone();
    let err = sync_with(&mut a, &addr, 7, b"wrong", false)
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::Transport(_)), "{err}");
    assert_eq!(a.data(), &before);
    server.abort();
}

#[tokio::test]
async fn two_replicas_that_never_meet_converge_through_a_relay() {
    // The relay is a replica that makes no change of its own: it stores what one replica
    // syncs to it and forwards it to the next (seed 004, claims 26 and 31).
    let dir = tempfile::tempdir().unwrap();
    let (relay, server) = serving(dir.path(), 9, &[]).await;
    let mut a = open(dir.path(), 0).await;
    let mut b = open(dir.path(), 1).await;
    a.write("from a", Some("1")).await.unwrap();
    b.write("from b", Some("2")).await.unwrap();
    sync_with(&mut a, &relay, 7, KEY, true).await.unwrap();
    sync_with(&mut b, &relay, 7, KEY, true).await.unwrap();
    sync_with(&mut a, &relay, 7, KEY, true).await.unwrap();
    server.abort();
    assert_eq!(a.data().values().len(), 2);
    assert_eq!(a.data().values(), b.data().values());
    assert_eq!(a.data().knowledge, b.data().knowledge);
}

/// A TCP proxy in front of a replica that cuts some connections after a seeded number of
/// bytes (each direction has its budget; the side that runs out closes both ends' halves),
/// as a network that fails in the middle of a sync.
struct Cutter {
    addr: String,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Cutter {
    async fn new(
        target: String,
        rng: std::sync::Arc<std::sync::Mutex<rand::rngs::StdRng>>,
    ) -> Self {
        use rand::Rng;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cuts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = cuts.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                // Half the connections are cut, after 40 to 800 bytes each way.
                let budgets = {
                    let mut r = rng.lock().unwrap_or_else(|p| p.into_inner());
                    if r.random_bool(0.5) {
                        [r.random_range(40..800), r.random_range(40..800)]
                    } else {
                        [usize::MAX, usize::MAX]
                    }
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let c = counted.clone();
                tokio::spawn(async move {
                    let (a, b) = tokio::join!(pump(ir, ow, budgets[0]), pump(or, iw, budgets[1]));
                    if a || b {
                        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        Cutter { addr, cuts }
    }

    fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either closes or `budget` bytes passed; whether it cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut budget: usize,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let pass = n.min(budget);
        if to.write_all(&buf[..pass]).await.is_err() {
            return false;
        }
        budget -= pass;
        if budget == 0 {
            return true;
        }
    }
}

/// Writes `edits` (key, value or a deletion) at `r`.
async fn write_all(
    r: &mut LocalReplica,
    edits: Vec<(String, Option<String>)>,
) -> Result<(), String> {
    for (k, v) in edits {
        r.write(&k, v.as_deref()).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One seed of the knowledge-sync chaos test (see the test).
async fn knowledge_chaos(seed: u64) -> Result<String, String> {
    use rand::{Rng, SeedableRng};
    use replicore_runtime::knowledge::check_trace;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let traces = dir.path().join("trace");
    let rng = std::sync::Arc::new(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(
        seed,
    )));
    let draw = |f: &mut dyn FnMut(&mut rand::rngs::StdRng) -> usize| {
        f(&mut rng.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let open = |id: u64| {
        let (dir, traces) = (dir.path().join(format!("r{id}")), traces.clone());
        async move {
            LocalReplica::open_traced(&dir, id, ConflictPolicy::default(), true, Some(&traces))
                .await
                .map_err(|e| e.to_string())
        }
    };
    let mut written = 0usize;
    // Each replica writes a few of five shared keys (a fifth of them deletions), some
    // concurrently with the others.
    let edits = |n: usize, written: &mut usize| -> Vec<(String, Option<String>)> {
        (0..n)
            .map(|_| {
                *written += 1;
                let key = format!("k{}", draw(&mut |g| g.random_range(0..5)));
                let value =
                    (draw(&mut |g| g.random_range(0..5)) > 0).then(|| format!("v{}", *written));
                (key, value)
            })
            .collect()
    };
    let (mut synced, mut failed, mut cuts) = (0usize, 0usize, 0usize);
    // Rounds under faults: a replica serves behind a cutting link, another pulls from it
    // (two-way or not); each side writes first. Every round reopens both from disk.
    for _ in 0..16 {
        let src = draw(&mut |g| g.random_range(0..3)) as u64;
        let dst = (src + 1 + draw(&mut |g| g.random_range(0..2)) as u64) % 3;
        let two_way = draw(&mut |g| g.random_range(0..2)) == 1;
        let mut served = open(src).await?;
        let n = draw(&mut |g| g.random_range(0..3));
        write_all(&mut served, edits(n, &mut written)).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let target = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let server = tokio::spawn(async move {
            let _ = serve(listener, served, 7, KEY.to_vec()).await;
        });
        let link = Cutter::new(target, rng.clone()).await;
        let mut local = open(dst).await?;
        let n = draw(&mut |g| g.random_range(0..3));
        write_all(&mut local, edits(n, &mut written)).await?;
        match sync_with(&mut local, &link.addr, 7, KEY, two_way).await {
            Ok(_) => synced += 1,
            Err(_) => failed += 1,
        }
        drop(local);
        // Let the server finish with the connection before it stops.
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.abort();
        let _ = server.await;
        cuts += link.cuts();
    }
    // Healing: two-way syncs without faults through replica 0 until all agree.
    let mut rounds = 0;
    let datas = loop {
        for src in [1u64, 2, 1] {
            let served = open(src).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener
                .local_addr()
                .map_err(|e| e.to_string())?
                .to_string();
            let server = tokio::spawn(async move {
                let _ = serve(listener, served, 7, KEY.to_vec()).await;
            });
            let mut r0 = open(0).await?;
            sync_with(&mut r0, &addr, 7, KEY, true)
                .await
                .map_err(|e| format!("a sync without faults failed: {e}"))?;
            drop(r0);
            tokio::time::sleep(Duration::from_millis(20)).await;
            server.abort();
            let _ = server.await;
        }
        let mut datas = Vec::new();
        for id in 0..3 {
            datas.push(open(id).await?.data().clone());
        }
        rounds += 1;
        if datas
            .iter()
            .all(|d| d.knowledge == datas[0].knowledge && d.values() == datas[0].values())
        {
            break datas;
        }
        if rounds == 3 {
            return Err(format!("no convergence after {rounds} healing rounds"));
        }
    };
    if synced == 0 || failed == 0 || cuts == 0 {
        return Err(format!(
            "not the run intended: {synced} syncs completed, {failed} failed, {cuts} cut"
        ));
    }
    let report = check_trace(&traces).map_err(|e| e.to_string())?;
    if report.properties == 0 {
        return Err(format!("no property checked: {report}"));
    }
    Ok(format!(
        "knowledge chaos seed={seed}: {written} writes, {synced} syncs completed and {failed} \
         failed ({cuts} connections cut); converged after {rounds} healing rounds with {} \
         values; {report}",
        datas[0].values().len()
    ))
}

/// Chaos, seeded: three replicas write shared keys and sync pairwise, one way or both, over
/// links that cut half the connections in the middle; every round reopens the replicas from
/// disk. Then syncs without faults converge them (equal knowledge, equal values), and the
/// traces replay through `AppReplica` with the model's properties on every state
/// (`knowledge::check_trace`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_cut_syncs_and_restarts_converge_with_the_models_properties() {
    common::run_seeds(
        "knowledge chaos",
        "knowledge_sync",
        Duration::from_secs(60),
        knowledge_chaos,
    )
    .await;
}
