//! Model checking speed: states visited per second by an exhaustive DFS (one checker
//! thread, symmetry reduction as the checker uses it) on two fixed configs of protocol 1,
//! built through `replicore-model` directly:
//!
//! - `small`: 1 master, 2 slaves, script `2p` (one two-phase update), duplicating network,
//!   at most 1 crash (about 20 k states visited, 3 k unique; under a second);
//! - `larger`: 1 master, 2 slaves, script `1p,1p` (two one-phase updates), same network and
//!   crashes (about 250 k states visited, 23 k unique; a few seconds).
//!
//! The default config (`replicore-check master-slave`) takes minutes and is not run here;
//! `docs/checking.md` has its figures. Criterion's time is per whole check; its throughput
//! (elements/s) is states visited per second.
//!
//! `cargo bench -p replicore --bench model_check`; `cargo test -p replicore --release --bench
//! model_check` runs each config once as a smoke check.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use replicore_model::master_slave::model::{script, symmetry_for};
use replicore_model::master_slave::{MasterSlaveConfig, NetworkKind};
use stateright::{Checker, Expectation, Model};
use std::time::Duration;

fn config(slaves: usize, updates: &str) -> MasterSlaveConfig {
    MasterSlaveConfig {
        slaves,
        script: script(updates),
        clients: 1,
        network: NetworkKind::UnorderedDuplicating,
        lossy: false,
        own_keys: false,
        max_crashes: 1,
        history_bound: 1,
        disk_faults: 0,
        master_faults: false,
        mutant: None,
    }
}

/// Runs the check to the end; returns the states visited. Panics if a property fails, so
/// the bench measures a passing check.
fn check(cfg: &MasterSlaveConfig) -> usize {
    let model = cfg.clone().into_model();
    let symmetry = symmetry_for(&model);
    let checker = model
        .checker()
        .threads(1)
        .symmetry_fn(symmetry)
        .spawn_dfs()
        .join();
    assert!(checker.is_done());
    for p in checker.model().properties() {
        if p.expectation == Expectation::Always {
            assert!(checker.discovery(p.name).is_none(), "violated: {}", p.name);
        }
    }
    checker.state_count()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("model_check");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5));
    for (name, cfg) in [("small", config(2, "2p")), ("larger", config(2, "1p,1p"))] {
        let states = check(&cfg);
        group.throughput(Throughput::Elements(states as u64));
        group.bench_with_input(BenchmarkId::new("dfs_states", name), &cfg, |b, cfg| {
            b.iter(|| check(cfg))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
