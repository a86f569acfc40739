//! The cost of one update against the number of client ids the master has seen, and against
//! the data set's size. The master keeps a ledger entry for every client id it has ever
//! seen (`MasterUser::clients`, structurally shared, so the `Save` of every update carries it
//! at no copy). The runtime saves the ledger a row per id and the data a row per key, each
//! only where the update changed it (`SavedRows`), so the cost should be flat in both.
//!
//! For ledgers of 0, 1 000 and 30 000 ids (a store of 1 000 keys), and for stores of 1 000 and
//! 100 000 keys (an empty ledger):
//!
//! - `step`: the master's one-phase `on_msg` of one update, no I/O;
//! - `encode`: the postcard encoding of what the runtime writes as one row (the `Save` without
//!   its data and ledger rows); its size is printed;
//! - `durable_save`: the runtime's whole durable save of that update (`Disk::save`, one redb
//!   transaction with fsync).
//!
//! `cargo bench -p replicore --bench ledger_cost`; `cargo test -p replicore --release --bench
//! ledger_cost` runs each case once as a smoke check.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use replicore_model::master_slave::master_user::ClientEntry;
use replicore_model::master_slave::{ClientMsg, MasterServer, MasterState, Mode, Msg, Saved};
use replicore_model::store::KvOp;
use replicore_runtime::KvStore;
use replicore_runtime::runtime::storage::{Disk, Durable, Owner};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::hint::black_box;
use std::marker::PhantomData;
use std::time::Duration;

type M = Msg<KvStore>;

const MASTER: usize = 0;
const SLAVES: [usize; 2] = [1, 2];
/// The updating client's id; the ledger's other ids are below it.
const CLIENT: usize = 1 << 40;
/// The value size of every update, in bytes.
const VALUE_BYTES: usize = 100;

fn master() -> MasterServer<KvStore> {
    MasterServer {
        slaves: SLAVES.iter().map(|&s| Id::from(s)).collect(),
        history_bound: 256,
        heartbeat: Duration::from_millis(100)..Duration::from_millis(150),
        mutant: None,
        store: PhantomData,
    }
}

/// A master with `keys` keys whose ledger holds `ids` clients, each answered once.
fn master_state(keys: u32, ids: usize) -> MasterState<KvStore> {
    let mut state = master().on_start(Id::from(MASTER), &None, &mut Out::new());
    for i in 0..keys {
        state
            .user
            .data
            .entries
            .insert(format!("key{i:08}"), vec![7; VALUE_BYTES]);
    }
    for i in 0..ids {
        state.user.clients.insert(
            Id::from((1usize << 32) + i),
            ClientEntry {
                next_req: 1,
                last_reply: Some(ClientMsg::Committed {
                    req: 0,
                    version: i as u64,
                }),
            },
        );
    }
    state
}

fn update(req: u64) -> M {
    Msg::Client(ClientMsg::Update {
        req,
        op: KvOp::Put(
            format!("key{:08}", req * 7919 % 1_000),
            vec![9; VALUE_BYTES],
        ),
        mode: Mode::OnePhase,
    })
}

/// One one-phase update: the new state and the `Save` it emitted.
fn step(state: MasterState<KvStore>, req: u64) -> (MasterState<KvStore>, Saved<KvStore>) {
    let mut cow = Cow::Owned(state);
    let mut out = Out::new();
    master().on_msg(
        Id::from(MASTER),
        &mut cow,
        Id::from(CLIENT),
        update(req),
        &mut out,
    );
    let saved = out
        .into_iter()
        .find_map(|c| match c {
            Command::Save(s) => Some(s),
            _ => None,
        })
        .expect("a one-phase update saves");
    (cow.into_owned(), saved)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_cost");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    for (keys, ids) in [
        (1_000u32, 0usize),
        (1_000, 1_000),
        (1_000, 30_000),
        (100_000, 0),
    ] {
        let name = format!("{ids}_ids_{keys}_keys");
        let state = master_state(keys, ids);

        group.bench_function(BenchmarkId::new("step", &name), |b| {
            let mut req = 0;
            b.iter_batched(
                || state.clone(),
                |s| {
                    req += 1;
                    step(s, req)
                },
                BatchSize::SmallInput,
            )
        });

        let (_, saved) = step(state.clone(), 0);
        let (_, rest) = saved.clone().split();
        let row = postcard::to_allocvec(&rest).expect("encodes");
        println!(
            "ledger_cost/{name}: the saved-state row is {} bytes",
            row.len()
        );
        group.bench_function(BenchmarkId::new("encode", &name), |b| {
            b.iter(|| black_box(postcard::to_allocvec(black_box(&rest)).expect("encodes")))
        });

        group.bench_function(BenchmarkId::new("durable_save", &name), |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            let disk = Disk::open_or_init(dir.path(), &Owner::new(1, 0, "bench")).expect("open");
            let mut last = disk
                .save(&Default::default(), saved.clone())
                .expect("initial save");
            let mut s = Some(state.clone());
            let mut req = 1;
            b.iter(|| {
                let (next, saved) = step(s.take().expect("put back below"), req);
                s = Some(next);
                req += 1;
                last = disk.save(&last, saved).expect("save");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
