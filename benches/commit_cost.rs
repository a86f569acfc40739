//! A commit's cost is proportional to its delta, not to the data set: one-key updates on
//! stores of 1 000 and 100 000 keys, (a) the incremental diff the runtime persists and (b) a
//! whole durable save (one redb transaction with fsync). Both should stay flat as the data
//! set grows 100×.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use replicore_model::master_slave::slave_user::SlaveUser;
use replicore_model::master_slave::{Saved, SlaveStorage};
use replicore_model::store::{KvOp, Store};
use replicore_runtime::KvStore;
use replicore_runtime::runtime::storage::Disk;
use std::hint::black_box;

fn data_of(keys: u32) -> KvStore {
    let mut data = KvStore::default();
    for i in 0..keys {
        data.entries.insert(format!("key{i:08}"), vec![7; 32]);
    }
    data
}

fn saved(version: u64, data: KvStore) -> Saved<KvStore> {
    Saved::Slave(SlaveStorage {
        user: SlaveUser {
            version,
            data,
            ..SlaveUser::default()
        },
        lost: false,
    })
}

fn one_key_update(data: &mut KvStore, i: u64, keys: u32) {
    let key = format!("key{:08}", (i * 7919) % u64::from(keys));
    let d = data.delta_of(&KvOp::Put(key, i.to_be_bytes().to_vec()));
    data.apply(&d);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_cost");
    group.sample_size(20);
    for keys in [1_000u32, 100_000] {
        let base = data_of(keys);

        group.bench_with_input(BenchmarkId::new("diff_one_key", keys), &keys, |b, &keys| {
            let mut i = 0;
            b.iter(|| {
                let mut next = base.clone(); // O(1): structurally shared
                one_key_update(&mut next, i, keys);
                i += 1;
                black_box(next.diff_from(&base))
            });
        });

        group.bench_with_input(
            BenchmarkId::new("durable_save_one_key", keys),
            &keys,
            |b, &keys| {
                let dir = tempfile::tempdir().expect("tempdir");
                let disk = Disk::open_or_init(
                    dir.path(),
                    &replicore_runtime::runtime::storage::Owner::new(1, 1, "bench"),
                )
                .expect("open");
                let mut last = disk
                    .save(&Default::default(), saved(1, base.clone()))
                    .expect("initial save");
                let mut data = base.clone();
                let mut version = 1;
                b.iter(|| {
                    version += 1;
                    one_key_update(&mut data, version, keys);
                    last = disk
                        .save(&last, saved(version, data.clone()))
                        .expect("save");
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
