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

mod model_check {
    //! Protocol 1 model-checked with the ledger plugged in, through the model's generic
    //! entry point (`AnyStoreConfig`) and Stateright's BFS.

    use super::store::{Ledger, LedgerDelta, LedgerOp};
    use replicore_model::master_slave::model::{AnyStoreConfig, props};
    use replicore_model::master_slave::{ScriptStep, UpdateKind};
    use replicore_model::store::Store;
    use serde::{Deserialize, Serialize};
    use stateright::{Checker, Model};

    fn step<S: Store>(op: S::Op, kind: UpdateKind) -> ScriptStep<S> {
        ScriptStep { op, kind }
    }

    fn deposit(account: &str, cents: u64) -> LedgerOp {
        LedgerOp::Deposit {
            account: account.into(),
            cents,
        }
    }

    #[test]
    fn protocol_one_on_the_ledger_keeps_every_property() {
        let transfer = LedgerOp::Transfer {
            from: "alice".into(),
            to: "bob".into(),
            cents: 1,
        };
        let overdraft = LedgerOp::Withdraw {
            account: "bob".into(),
            cents: 5,
        };
        // Every update kind without crashes (convergence checked at the end of every run),
        // and a one-phase then a two-phase update across a crash.
        let runs = [
            (
                vec![
                    step(deposit("alice", 2), UpdateKind::OnePhase),
                    step(transfer.clone(), UpdateKind::TwoPhase),
                    step(overdraft, UpdateKind::RolledBack),
                ],
                0,
            ),
            (
                vec![
                    step(deposit("alice", 2), UpdateKind::OnePhase),
                    step(transfer, UpdateKind::TwoPhase),
                ],
                1,
            ),
        ];
        for (script, max_crashes) in runs {
            let mut cfg = AnyStoreConfig::<Ledger>::new(script);
            cfg.slaves = 1;
            cfg.max_crashes = max_crashes;
            let model = cfg.into_model();
            let names: Vec<_> = model.properties().iter().map(|p| p.name).collect();
            assert!(names.contains(&props::SLAVE_DATA) && names.contains(&props::REACH_DELTA));
            let checker = model.checker().spawn_bfs().join();
            // Every Always and Eventually property holds and every Sometimes one is reached.
            checker.assert_properties();
            assert!(checker.is_done());
            assert!(checker.unique_state_count() > 10_000);
        }
    }

    /// The ledger with a compose that keeps only its first delta: a slave that catches up
    /// two steps at once receives half of them.
    #[derive(
        Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize,
    )]
    struct DropsSecondDelta(Ledger);

    impl Store for DropsSecondDelta {
        type Op = LedgerOp;
        type Delta = LedgerDelta;
        fn delta_of(&self, op: &LedgerOp) -> LedgerDelta {
            self.0.delta_of(op)
        }
        fn apply(&mut self, delta: &LedgerDelta) {
            self.0.apply(delta)
        }
        fn compose(first: &LedgerDelta, then: &LedgerDelta) -> LedgerDelta {
            if first == &LedgerDelta::default() {
                then.clone()
            } else {
                first.clone()
            }
        }
        fn empty_delta() -> LedgerDelta {
            LedgerDelta::default()
        }
        fn diff_from(&self, old: &Self) -> LedgerDelta {
            self.0.diff_from(&old.0)
        }
    }

    #[test]
    fn a_store_that_breaks_a_law_is_refuted_by_the_model() {
        let mut cfg = AnyStoreConfig::<DropsSecondDelta>::new(vec![
            step(deposit("alice", 1), UpdateKind::OnePhase),
            step(deposit("bob", 1), UpdateKind::OnePhase),
        ]);
        cfg.slaves = 1;
        cfg.max_crashes = 0;
        // Two steps remembered, so a slave that missed both gets them composed.
        cfg.history_bound = 2;
        let checker = cfg.into_model().checker().spawn_bfs().join();
        let broken: Vec<_> = [props::SLAVE_DATA, props::UNIQUE_VERSIONS]
            .into_iter()
            .filter(|p| checker.discovery(p).is_some())
            .collect();
        assert!(!broken.is_empty(), "no safety property refuted");
        // The law checker names the cause.
        let law =
            replicore_model::laws::check_store_laws::<DropsSecondDelta>(super::store::ops(), 256);
        assert!(
            matches!(law, Err(replicore_model::laws::LawError::Broken(b)) if b.law == replicore_model::laws::Law::Compose)
        );
    }
}
