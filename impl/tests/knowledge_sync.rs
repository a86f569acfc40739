//! Online knowledge sync (`replicore sync`) between replicas over 127.0.0.1: two-way syncs
//! converge, a wrong key is refused.

use replicore_model::knowledge::ConflictPolicy;
use replicore_runtime::knowledge::LocalReplica;
use replicore_runtime::knowledge::net::{SyncError, serve, sync_with};
use std::path::Path;

const KEY: &[u8] = b"test key";

async fn open(dir: &Path, id: u64) -> LocalReplica {
    LocalReplica::open(&dir.join(format!("r{id}")), id, ConflictPolicy::default())
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
