//! The "bring your own protocol" example (`examples/register/`) runs on the runtime: three
//! nodes over TCP and redb converge across a restart, and their traces replay through the
//! example's own actor.

#[path = "../examples/register/cluster.rs"]
mod cluster;
#[path = "../examples/register/protocol.rs"]
mod protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_outside_the_runtime_runs_on_it_and_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let (version, replayed) = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        cluster::scenario(dir.path()),
    )
    .await
    .expect("bounded")
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(version, 10);
    assert_eq!((replayed.nodes, replayed.restarts), (3, 1), "{replayed}");
    assert!(
        replayed.deliveries > 0 && replayed.inputs >= 10,
        "{replayed}"
    );
}
