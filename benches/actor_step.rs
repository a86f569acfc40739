//! One actor step, no I/O: the master's and a slave's `on_msg` for each message of the
//! replication path, on stores of 10 and 100 000 keys. The cost of a step must not depend
//! on the size of the store: the stores are structurally shared (`imbl`), so the clones a
//! step makes (its `Save`, the new data) are O(1) and an update is O(log n).
//!
//! Each iteration runs one step on a fresh copy of a prepared state (the copy, O(1), is not
//! timed) and drops the emitted commands outside the timing.
//!
//! `cargo bench -p replicore --bench actor_step`; `cargo test -p replicore --release --bench
//! actor_step` runs each case once as a smoke check.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use replicore_model::master_slave::{
    ClientMsg, MasterServer, MasterState, Mode, Msg, ServiceMsg, SlaveServer, SlaveState,
};
use replicore_model::store::{KvOp, Store};
use replicore_runtime::KvStore;
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::marker::PhantomData;
use std::time::Duration;

type M = Msg<KvStore>;

const MASTER: usize = 0;
const SLAVES: [usize; 2] = [1, 2];
const CLIENT: usize = 1 << 32;
/// The value size of every update, in bytes.
const VALUE_BYTES: usize = 100;
/// The runtime's default history bound (`NodeConfig::new`).
const HISTORY: usize = 256;
/// Updates committed before the measured step, so the ledger, history and versions are not
/// those of a fresh node.
const WARM_UPDATES: u64 = 8;

fn data_of(keys: u32) -> KvStore {
    let mut data = KvStore::default();
    for i in 0..keys {
        data.entries
            .insert(format!("key{i:08}"), vec![7; VALUE_BYTES]);
    }
    data
}

fn put(i: u64) -> KvOp<String, Vec<u8>> {
    KvOp::Put(
        format!("key{:08}", i * 7919 % 100_000),
        vec![9; VALUE_BYTES],
    )
}

fn update(req: u64, mode: Mode) -> M {
    Msg::Client(ClientMsg::Update {
        req,
        op: put(req),
        mode,
    })
}

const TWO_PHASE: Mode = Mode::TwoPhase { timeout_ms: 5_000 };

fn master() -> MasterServer<KvStore> {
    MasterServer {
        slaves: SLAVES.iter().map(|&s| Id::from(s)).collect(),
        history_bound: HISTORY,
        heartbeat: Duration::from_millis(100)..Duration::from_millis(150),
        mutant: None,
        store: PhantomData,
    }
}

fn slave() -> SlaveServer<KvStore> {
    SlaveServer {
        master: Id::from(MASTER),
        mutant: None,
        store: PhantomData,
    }
}

/// Runs one step and returns the new state and the commands it emitted.
fn step<A: Actor>(
    actor: &A,
    me: usize,
    state: A::State,
    src: usize,
    msg: A::Msg,
) -> (A::State, Out<A>)
where
    A::State: Clone,
{
    let mut cow = Cow::Owned(state);
    let mut out = Out::new();
    actor.on_msg(Id::from(me), &mut cow, Id::from(src), msg, &mut out);
    (cow.into_owned(), out)
}

fn sends<A: Actor>(out: &Out<A>) -> usize {
    out.iter()
        .filter(|c| matches!(c, Command::Send(..)))
        .count()
}

/// A master whose store holds `keys` keys and that committed [`WARM_UPDATES`] one-phase
/// updates of [`CLIENT`].
fn warm_master(keys: u32) -> MasterState<KvStore> {
    let m = master();
    let mut state = m.on_start(Id::from(MASTER), &None, &mut Out::new());
    state.user.data = data_of(keys);
    for req in 0..WARM_UPDATES {
        state = step(&m, MASTER, state, CLIENT, update(req, Mode::OnePhase)).0;
    }
    state
}

/// A slave at the master's version with `keys` keys.
fn warm_slave(keys: u32, version: u64) -> SlaveState<KvStore> {
    let s = slave();
    let mut state = s.on_start(Id::from(1), &None, &mut Out::new());
    state.user.data = data_of(keys);
    state.user.version = version;
    state
}

// One named case: the actor, its id, the state before the step, and the input.
#[allow(clippy::too_many_arguments)]
fn bench_case<A: Actor>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    keys: u32,
    actor: &A,
    me: usize,
    state: &A::State,
    src: usize,
    msg: &A::Msg,
) where
    A::State: Clone,
    A::Msg: Clone,
{
    c.bench_with_input(BenchmarkId::new(name, keys), &keys, |b, _| {
        b.iter_batched(
            || (state.clone(), msg.clone()),
            |(state, msg)| step(actor, me, state, src, msg),
            BatchSize::SmallInput,
        )
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("actor_step");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let (m, s) = (master(), slave());
    for keys in [10u32, 100_000] {
        let idle = warm_master(keys);
        let version = idle.user.version;
        let req = WARM_UPDATES;

        // Master, one-phase update: commit, save, announce to every slave, reply.
        let announce = update(req, Mode::OnePhase);
        let (_, out) = step(&m, MASTER, idle.clone(), CLIENT, announce.clone());
        assert_eq!(
            sends(&out),
            SLAVES.len() + 1,
            "announce to each slave + reply"
        );
        bench_case(
            &mut group,
            "master/announce",
            keys,
            &m,
            MASTER,
            &idle,
            CLIENT,
            &announce,
        );

        // Master, two-phase update: reserve, save, prepare every slave.
        let prepare = update(req, TWO_PHASE);
        let (pending, out) = step(&m, MASTER, idle.clone(), CLIENT, prepare.clone());
        assert_eq!(sends(&out), SLAVES.len(), "prepare to each slave");
        bench_case(
            &mut group,
            "master/prepare",
            keys,
            &m,
            MASTER,
            &idle,
            CLIENT,
            &prepare,
        );

        // Master, a vote that is not the last: recorded, nothing sent.
        let vote = Msg::Service(ServiceMsg::Prepared {
            version: version + 1,
        });
        let (one_vote, out) = step(&m, MASTER, pending.clone(), SLAVES[0], vote.clone());
        assert_eq!(sends(&out), 0);
        bench_case(
            &mut group,
            "master/vote",
            keys,
            &m,
            MASTER,
            &pending,
            SLAVES[0],
            &vote,
        );

        // Master, the last vote: decide commit, save, commit to every slave, reply.
        let (decided, out) = step(&m, MASTER, one_vote.clone(), SLAVES[1], vote.clone());
        assert_eq!(decided.user.version, version + 1, "the last vote commits");
        assert_eq!(sends(&out), SLAVES.len() + 1);
        bench_case(
            &mut group,
            "master/commit",
            keys,
            &m,
            MASTER,
            &one_vote,
            SLAVES[1],
            &vote,
        );

        // Master, a delta request from 4 versions back: compose the delta from the history.
        let request = Msg::Service(ServiceMsg::DeltaRequest { from: version - 4 });
        let (_, out) = step(&m, MASTER, idle.clone(), SLAVES[0], request.clone());
        assert!(
            out.iter()
                .any(|c| matches!(c, Command::Send(_, Msg::Service(ServiceMsg::Delta { .. })))),
            "a delta, not a snapshot"
        );
        bench_case(
            &mut group,
            "master/delta_request",
            keys,
            &m,
            MASTER,
            &idle,
            SLAVES[0],
            &request,
        );

        // Slave at the master's version.
        let at = warm_slave(keys, version);
        let delta = at.user.data.delta_of(&put(req));

        // Slave, announcement at its version: apply, save.
        let announce = Msg::Service(ServiceMsg::Announce {
            prior: version,
            new: version + 1,
            delta: Some(delta.clone()),
        });
        let (after, _) = step(&s, 1, at.clone(), MASTER, announce.clone());
        assert_eq!(after.user.version, version + 1);
        bench_case(
            &mut group,
            "slave/announce",
            keys,
            &s,
            1,
            &at,
            MASTER,
            &announce,
        );

        // Slave, announcement ahead of it: ask for the delta.
        let ahead = Msg::Service(ServiceMsg::Announce {
            prior: version + 3,
            new: version + 4,
            delta: Some(delta.clone()),
        });
        let (_, out) = step(&s, 1, at.clone(), MASTER, ahead.clone());
        assert_eq!(sends(&out), 1, "one delta request");
        bench_case(
            &mut group,
            "slave/delta_request",
            keys,
            &s,
            1,
            &at,
            MASTER,
            &ahead,
        );

        // Slave, the delta it asked for: apply, save.
        let reply = Msg::Service(ServiceMsg::Delta {
            from: version,
            to: version + 4,
            delta: delta.clone(),
        });
        let (after, _) = step(&s, 1, at.clone(), MASTER, reply.clone());
        assert_eq!(after.user.version, version + 4);
        bench_case(&mut group, "slave/delta", keys, &s, 1, &at, MASTER, &reply);

        // Slave, prepare at its version: save the prepared delta, vote.
        let prepare = Msg::Service(ServiceMsg::Prepare {
            prior: version,
            new: version + 1,
            delta,
        });
        let (prepared, out) = step(&s, 1, at.clone(), MASTER, prepare.clone());
        assert_eq!(sends(&out), 1, "one vote");
        bench_case(
            &mut group,
            "slave/prepare_vote",
            keys,
            &s,
            1,
            &at,
            MASTER,
            &prepare,
        );

        // Slave, commit of the prepared delta: apply, save.
        let commit = Msg::Service(ServiceMsg::Commit {
            version: version + 1,
        });
        let (after, _) = step(&s, 1, prepared.clone(), MASTER, commit.clone());
        assert_eq!(after.user.version, version + 1);
        bench_case(
            &mut group,
            "slave/commit",
            keys,
            &s,
            1,
            &prepared,
            MASTER,
            &commit,
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
