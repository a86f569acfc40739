//! Protocol 1 in memory: the model's master and 2 slaves (`MasterServer`, `SlaveServer`),
//! driven directly, every message through the runtime's codec (`codec::encode` of a
//! `Frame::Actor`, `codec::decode` on delivery), no disk (the `Save` commands are dropped),
//! no TCP, no tokio: the protocol's own ceiling, the shape of openraft's published in-memory
//! benchmark. A round is one update a client is told is committed; `in flight` clients each
//! keep one update outstanding and send the next as soon as they are answered.
//!
//! - one-phase at 1 and at 4,096 in flight: the master commits, announces to both slaves
//!   and answers at once;
//! - two-phase at 1 and at 1,024 in flight: the master holds one undecided round and queues
//!   at most `QUEUE_MAX` (1,024) requests behind it (beyond it a request is ignored until its
//!   client retries, which this driver does not do), so 1,024 is its deepest pipeline; queued
//!   requests share rounds of up to `GROUP_MAX` (64, group commit).
//!
//! Messages are delivered in FIFO order over one queue (a loss-free network that does not
//! reorder); timers are not fired (no message is lost, so neither heartbeats nor the decision
//! timeout are needed). Updates are puts of 100-byte values on 1,000 keys. Criterion's
//! throughput is rounds/s; an iteration is `in flight` rounds (one wave, see below).
//!
//! `cargo bench -p replicore --bench protocol_memory`; `cargo test -p replicore --release
//! --bench protocol_memory` runs each case once as a smoke check.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use replicore_model::master_slave::{
    ClientMsg, MasterServer, MasterState, Mode, Msg, SlaveServer, SlaveState,
};
use replicore_model::store::KvOp;
use replicore_runtime::KvStore;
use replicore_runtime::runtime::codec::{self, Frame, MAX_FRAME_BYTES_DEFAULT};
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

type M = Msg<KvStore>;

const MASTER: usize = 0;
const SLAVES: [usize; 2] = [1, 2];
/// The first client's id; client `i` is `CLIENT_BASE + i`.
const CLIENT_BASE: usize = 1 << 32;
/// The value size of every update, in bytes.
const VALUE_BYTES: usize = 100;
/// Keys the updates write, round robin.
const KEYS: u64 = 1_000;
/// The runtime's default history bound (`NodeConfig::new`).
const HISTORY: usize = 256;
const TWO_PHASE: Mode = Mode::TwoPhase { timeout_ms: 5_000 };

/// The three nodes, the frames in flight, and the clients' request numbers.
struct Cluster {
    master: MasterServer<KvStore>,
    slave: SlaveServer<KvStore>,
    /// The nodes' states, held owned and handed to each step as `Cow::Owned` as the runtime's
    /// driver does (`impl/src/runtime/driver.rs`), so a step never clones them; `None` only
    /// during a step.
    master_state: Option<MasterState<KvStore>>,
    slave_states: Vec<Option<SlaveState<KvStore>>>,
    /// Encoded frames in flight: (source, destination, body).
    wire: VecDeque<(usize, usize, bytes::Bytes)>,
    /// The next request number of each client.
    next_req: Vec<u64>,
    mode: Mode,
    /// Updates answered `Committed`.
    committed: u64,
}

impl Cluster {
    fn new(in_flight: usize, mode: Mode) -> Self {
        let master = MasterServer {
            slaves: SLAVES.iter().map(|&s| Id::from(s)).collect(),
            history_bound: HISTORY,
            heartbeat: Duration::from_millis(100)..Duration::from_millis(150),
            mutant: None,
            store: PhantomData,
        };
        let slave = SlaveServer {
            master: Id::from(MASTER),
            mutant: None,
            store: PhantomData,
        };
        let master_state = Some(master.on_start(Id::from(MASTER), &None, &mut Out::new()));
        let slave_states = SLAVES
            .iter()
            .map(|&s| Some(slave.on_start(Id::from(s), &None, &mut Out::new())))
            .collect();
        let mut c = Cluster {
            master,
            slave,
            master_state,
            slave_states,
            wire: VecDeque::new(),
            next_req: vec![0; in_flight],
            mode,
            committed: 0,
        };
        for client in 0..in_flight {
            c.submit(client);
        }
        c
    }

    /// Encodes `msg` as the runtime would and puts it on the wire.
    fn send(&mut self, src: usize, dst: usize, msg: M) {
        let body = codec::encode(&Frame::Actor(msg), MAX_FRAME_BYTES_DEFAULT)
            .expect("a protocol message fits a frame");
        self.wire.push_back((src, dst, body));
    }

    /// Client `client` sends its next update.
    fn submit(&mut self, client: usize) {
        let req = self.next_req[client];
        self.next_req[client] += 1;
        let n = self.committed + client as u64;
        let op = KvOp::Put(format!("key{:04}", n % KEYS), vec![9; VALUE_BYTES]);
        let msg = Msg::Client(ClientMsg::Update {
            req,
            op,
            mode: self.mode,
        });
        self.send(CLIENT_BASE + client, MASTER, msg);
    }

    /// Sends what a step emitted; `Save`s and timers are dropped (no disk, no loss).
    fn emit<A: Actor<Msg = M>>(&mut self, me: usize, out: Out<A>) {
        for cmd in out {
            if let Command::Send(dst, msg) = cmd {
                self.send(me, usize::from(dst), msg);
            }
        }
    }

    /// Delivers one frame; false when none is in flight.
    fn deliver_one(&mut self) -> bool {
        let Some((src, dst, body)) = self.wire.pop_front() else {
            return false;
        };
        let Frame::Actor(msg) = codec::decode::<Frame<M>>(&body).expect("our own encoding") else {
            unreachable!("only actor frames are sent");
        };
        if dst == MASTER {
            let mut out = Out::new();
            let mut state = Cow::Owned(self.master_state.take().expect("put back below"));
            self.master
                .on_msg(Id::from(dst), &mut state, Id::from(src), msg, &mut out);
            self.master_state = Some(state.into_owned());
            self.emit(dst, out);
        } else if dst >= CLIENT_BASE {
            if let Msg::Client(ClientMsg::Committed { .. }) = msg {
                self.committed += 1;
                self.submit(dst - CLIENT_BASE);
            }
        } else {
            let i = SLAVES.iter().position(|&s| s == dst).expect("a slave");
            let mut out = Out::new();
            let mut state = Cow::Owned(self.slave_states[i].take().expect("put back below"));
            self.slave
                .on_msg(Id::from(dst), &mut state, Id::from(src), msg, &mut out);
            self.slave_states[i] = Some(state.into_owned());
            self.emit(dst, out);
        }
        true
    }

    /// Runs until `rounds` more updates are committed.
    fn run(&mut self, rounds: u64) {
        let target = self.committed + rounds;
        while self.committed < target {
            assert!(self.deliver_one(), "the cluster stalled");
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol_memory");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, mode, in_flight) in [
        ("one_phase", Mode::OnePhase, 1usize),
        ("one_phase", Mode::OnePhase, 4_096),
        ("two_phase", TWO_PHASE, 1),
        ("two_phase", TWO_PHASE, 1_024),
    ] {
        let mut cluster = Cluster::new(in_flight, mode);
        // Warm: every client answered at least once, the history full.
        cluster.run((in_flight as u64).max(HISTORY as u64) * 2);
        // One iteration is `in_flight` rounds: a whole wave. In FIFO order the master takes
        // every client's update, then the slaves and clients get the announcements and replies
        // of all of them, so fewer rounds than a wave would time one phase only (the replies
        // without the master's steps, or the reverse).
        group.throughput(Throughput::Elements(in_flight as u64));
        group.bench_function(BenchmarkId::new(name, in_flight), |b| {
            b.iter_custom(|waves| {
                let started = Instant::now();
                cluster.run(waves * in_flight as u64);
                started.elapsed()
            })
        });
        let v = cluster
            .master_state
            .as_ref()
            .expect("between steps")
            .user
            .version;
        for s in cluster.slave_states.iter().flatten() {
            // No slave is ahead of the master.
            assert!(s.user.version <= v);
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
