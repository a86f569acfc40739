//! The "bring your own store" example (`examples/ledger/`): its ledger keeps the store laws,
//! and protocol 1 replicates it over TCP and redb on 127.0.0.1 to two slaves, which read
//! back what the client's updates made.

#[path = "../examples/ledger/cluster.rs"]
mod cluster;
#[path = "../examples/ledger/store.rs"]
#[allow(dead_code)]
mod store;

use replicore_model::laws::check_store_laws_against;
use store::{Ledger, performs};

#[test]
fn the_ledger_keeps_the_store_laws() {
    if let Err(e) = check_store_laws_against(store::ops(), 1024, performs) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_one_replicates_a_users_own_store() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        cluster::scenario(dir.path()),
    )
    .await
    .expect("bounded")
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Every update commits its own version, the refused overdraft included.
    assert_eq!(outcome.versions, vec![1, 2, 3, 4, 5]);
    // The reference meaning of the updates, applied directly.
    let expected = cluster::updates()
        .iter()
        .fold(Ledger::default(), |l, (op, _)| performs(&l, op));
    assert_eq!(
        (expected.balance("alice"), expected.balance("bob")),
        (70, 0)
    );
    assert_eq!((expected.balance("carol"), expected.postings), (80, 4));
    assert_eq!(outcome.master, expected);
    for (i, (version, data)) in outcome.slaves.iter().enumerate() {
        assert_eq!(*version, 5, "slave {}", i + 1);
        assert_eq!(*data, expected, "slave {}", i + 1);
    }
    assert_eq!(outcome.carol_on_slave, (5, Some(80)));
}
