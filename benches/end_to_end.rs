//! End to end over loopback TCP: a real master and 1, 2 or 4 slaves (embedding API, TCP with
//! handshake, redb with fsync on every save), driven by 1 or 16 TCP clients, each with one
//! update in flight, values of 100 B and 4 KiB.
//!
//! - `e2e_one_phase`: one-phase updates; the time runs until every slave has committed the
//!   last one, so criterion's throughput (elements/s) is updates/s replicated to all slaves.
//! - `e2e_two_phase`: two-phase updates; criterion's time per element is the inverse of the
//!   throughput, and after each case a line gives the latency quantiles of each update, to
//!   the client's answer and to its commit on every slave.
//!
//! `cargo bench -p replicore --bench end_to_end` (2–4 minutes);
//! `cargo test -p replicore --release --bench end_to_end` runs each case once (one update)
//! as a smoke check. `benches/compare/` measures the same workloads with fixed durations
//! beside Redis, PostgreSQL and etcd.

#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod cluster;

use cluster::{Cluster, quantile};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use replicore_runtime::{KvStore, Mode};
use std::time::Duration;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for (group_name, mode) in [
        ("e2e_one_phase", Mode::OnePhase),
        ("e2e_two_phase", cluster::TWO_PHASE),
    ] {
        let mut group = c.benchmark_group(group_name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(1));
        for slaves in [1u64, 2, 4] {
            for clients in [1usize, 16] {
                for (value_bytes, size) in [(100usize, "100B"), (4096, "4KiB")] {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let cluster = rt.block_on(Cluster::<KvStore>::start(slaves, dir.path()));
                    let mut conns = rt.block_on(cluster::clients(&cluster, clients));
                    let mut client_latency = Vec::new();
                    let mut all_latency = Vec::new();
                    let id = BenchmarkId::from_parameter(format!(
                        "slaves={slaves}/clients={clients}/{size}"
                    ));
                    group.bench_function(id, |b| {
                        b.iter_custom(|iters| {
                            let run = rt.block_on(cluster::run(
                                &cluster,
                                &mut conns,
                                mode,
                                cluster::Load::Ops(iters),
                                1,
                                value_bytes,
                            ));
                            client_latency.extend(run.client_latency);
                            all_latency.extend(run.all_slaves_latency);
                            run.elapsed
                        })
                    });
                    if mode != Mode::OnePhase {
                        println!(
                            "{group_name}/slaves={slaves}/clients={clients}/{size}: {} updates; \
                             latency to the client p50 {:.2} ms p99 {:.2} ms; \
                             to commit on every slave p50 {:.2} ms p99 {:.2} ms",
                            client_latency.len(),
                            ms(quantile(&mut client_latency, 0.5)),
                            ms(quantile(&mut client_latency, 0.99)),
                            ms(quantile(&mut all_latency, 0.5)),
                            ms(quantile(&mut all_latency, 0.99)),
                        );
                    }
                    drop(conns);
                    rt.block_on(cluster.shutdown());
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
