//! A replicore cluster on 127.0.0.1 for measurements: a master and N slaves started with the
//! embedding API (`Node::start`: real TCP with handshake, redb with fsync on every save),
//! clients over TCP (`client::Client`), and the two workloads the benches and the
//! comparison measure. Shared by `benches/end_to_end.rs` and `examples/loadgen.rs`.
//!
//! Generic over the user layer: the shipped [`KvStore`] (one put per update), or [`BatchKv`],
//! whose update is a batch of puts committed as one version — what batching in the protocol
//! would do, measured with today's protocol and runtime.

use replicore_model::store::{KvOp, Store};
use replicore_runtime::master_slave::client::Client;
use replicore_runtime::master_slave::node::{Node, NodeConfig, Ticket};
use replicore_runtime::runtime::tls::Security;
use replicore_runtime::{KvStore, Mode, UserStore};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const CLUSTER_ID: u64 = 6;
const KEY: &[u8] = b"bench key";
/// How long a two-phase update may wait for its votes: far above any latency measured, so a
/// timeout shows up as an error, never as a fast abort.
pub const TWO_PHASE: Mode = Mode::TwoPhase { timeout_ms: 10_000 };
/// How long a client waits for any answer.
const WAIT: Duration = Duration::from_secs(30);

/// A user layer the workloads can drive: it builds an update of `n` one-key puts.
pub trait BenchStore: UserStore {
    /// An update putting `value` at `n` keys named from `prefix` and `i`.
    fn puts(prefix: &str, i: u64, n: usize, value: &[u8]) -> Self::Op;
}

fn key(prefix: &str, i: u64) -> String {
    format!("{prefix}{:06}", i % 100_000)
}

impl BenchStore for KvStore {
    /// One put (`n` is 1 for this store).
    fn puts(prefix: &str, i: u64, n: usize, value: &[u8]) -> Self::Op {
        debug_assert_eq!(n, 1, "KvStore updates one key");
        KvOp::Put(key(prefix, i), value.to_vec())
    }
}

/// The shipped key-value store with a batch of puts as its update: one version, one save
/// per node and one announcement (or one prepare/commit round) for the whole batch.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct BatchKv(pub KvStore);

impl Store for BatchKv {
    type Op = Vec<KvOp<String, Vec<u8>>>;
    type Delta = <KvStore as Store>::Delta;

    fn delta_of(&self, op: &Self::Op) -> Self::Delta {
        op.iter().fold(KvStore::empty_delta(), |acc, o| {
            KvStore::compose(&acc, &self.0.delta_of(o))
        })
    }

    fn apply(&mut self, delta: &Self::Delta) {
        self.0.apply(delta);
    }

    fn compose(first: &Self::Delta, then: &Self::Delta) -> Self::Delta {
        KvStore::compose(first, then)
    }

    fn empty_delta() -> Self::Delta {
        KvStore::empty_delta()
    }

    fn diff_from(&self, old: &Self) -> Self::Delta {
        self.0.diff_from(&old.0)
    }
}

impl UserStore for BatchKv {
    fn rows(delta: &Self::Delta) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        KvStore::rows(delta)
    }

    fn from_rows(rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        KvStore::from_rows(rows).map(BatchKv)
    }

    fn read_row(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.read_row(key)
    }

    fn key_count(&self) -> u64 {
        self.0.key_count()
    }
}

impl BenchStore for BatchKv {
    /// `n` puts at consecutive keys.
    fn puts(prefix: &str, i: u64, n: usize, value: &[u8]) -> Self::Op {
        (0..n as u64)
            .map(|k| KvOp::Put(key(prefix, i * n as u64 + k), value.to_vec()))
            .collect()
    }
}

/// A running master and its slaves.
pub struct Cluster<S: UserStore = KvStore> {
    /// The master (node 0).
    pub master: Node<S>,
    /// The slaves (nodes 1..=N).
    pub slaves: Vec<Node<S>>,
    /// What secures every connection, the clients' included.
    pub security: Security,
}

impl<S: BenchStore> Cluster<S> {
    /// Starts a master and `slaves` slaves with their data directories under `dir`, and
    /// waits until every slave is connected (a one-phase, then a two-phase update reach
    /// all of them).
    pub async fn start(slaves: u64, dir: &Path) -> Cluster<S> {
        Self::start_secured(slaves, dir, Security::default()).await
    }

    /// [`Cluster::start`], every connection secured by `security` (TLS with derived keys by
    /// default; `Security::Plain` for the plain-TCP rows beside them).
    pub async fn start_secured(slaves: u64, dir: &Path, security: Security) -> Cluster<S> {
        let mut cfg = NodeConfig::new(CLUSTER_ID, KEY, 0, slaves, dir.join("master"));
        cfg.init = true;
        cfg.security = security.clone();
        let master = Node::start(cfg).await.expect("master starts");
        let mut nodes = Vec::new();
        for i in 1..=slaves {
            let mut cfg = NodeConfig::new(CLUSTER_ID, KEY, i, slaves, dir.join(format!("s{i}")));
            cfg.init = true;
            cfg.security = security.clone();
            cfg.master_addr = master.local_addr().to_string();
            nodes.push(Node::start(cfg).await.expect("slave starts"));
        }
        let cluster = Cluster {
            master,
            slaves: nodes,
            security,
        };
        // Every slave is connected once it has a one-phase update: a prepare sent to a slave
        // not yet connected is lost and would only be repaired by aborting at the timeout,
        // while a lost announcement is repaired by the heartbeat.
        let v = cluster
            .master
            .update(S::puts("warm-up", 0, 1, b"1"), Mode::OnePhase)
            .await
            .expect("warm-up update commits");
        all_reached(&mut cluster.slave_versions(), v).await;
        cluster
            .master
            .update(S::puts("warm-up", 1, 1, b"2"), TWO_PHASE)
            .await
            .expect("warm-up two-phase update commits");
        cluster
    }

    /// The master's address.
    pub fn master_addr(&self) -> String {
        self.master.local_addr().to_string()
    }

    /// Watches of every slave's committed version.
    pub fn slave_versions(&self) -> Vec<watch::Receiver<u64>> {
        self.slaves.iter().map(Node::versions).collect()
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for s in self.slaves {
            s.shutdown().await.expect("slave stops cleanly");
        }
        self.master.shutdown().await.expect("master stops cleanly");
    }
}

/// Waits until every slave has committed `version`.
pub async fn all_reached(versions: &mut [watch::Receiver<u64>], version: u64) {
    for v in versions.iter_mut() {
        v.wait_for(|v| *v >= version).await.expect("slave runs");
    }
}

/// Connects `n` clients to the master.
pub async fn clients<S: BenchStore>(cluster: &Cluster<S>, n: usize) -> Vec<Client<S>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            Client::<S>::connect_secured(
                &cluster.master_addr(),
                CLUSTER_ID,
                KEY,
                None,
                cluster.security.clone(),
            )
            .await
            .expect("client connects"),
        );
    }
    out
}

/// How much load one run offers.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// This many updates in all.
    Ops(u64),
    /// Updates until this long has passed (each client finishes the update it is in).
    For(Duration),
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Run {
    /// Updates done.
    pub ops: u64,
    /// From the first update sent to the last one committed on every slave.
    pub elapsed: Duration,
    /// Per update: sent → the client's `Committed` answer.
    pub client_latency: Vec<Duration>,
    /// Per update: sent → committed on every slave (two-phase runs only).
    pub all_slaves_latency: Vec<Duration>,
}

/// Runs updates of `batch` puts of `value_bytes` bytes each, spread over the clients, each
/// client one update at a time, then waits until every slave has all of them. `ops` in
/// [`Load::Ops`] and [`Run::ops`] count puts.
///
/// One-phase: throughput until every slave has the updates. Two-phase: each update's
/// latency to the client's answer and to its commit on every slave.
pub async fn run<S: BenchStore>(
    cluster: &Cluster<S>,
    clients: &mut Vec<Client<S>>,
    mode: Mode,
    load: Load,
    batch: usize,
    value_bytes: usize,
) -> Run {
    let n = clients.len() as u64;
    let value = Arc::new(vec![0x5a_u8; value_bytes]);
    let started = Instant::now();
    let (ops, until) = match load {
        Load::Ops(ops) => (ops.div_ceil(batch as u64), None),
        Load::For(d) => (u64::MAX, Some(started + d)),
    };
    let mut tasks = Vec::new();
    for (c, mut client) in std::mem::take(clients).into_iter().enumerate() {
        let c = c as u64;
        let count = if until.is_some() {
            u64::MAX
        } else {
            ops / n + u64::from(c < ops % n)
        };
        let value = value.clone();
        let mut versions = cluster.slave_versions();
        tasks.push(tokio::spawn(async move {
            let mut client_latency = Vec::new();
            let mut all_slaves_latency = Vec::new();
            let mut last = 0;
            for i in 0..count {
                if until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let op = S::puts(&format!("c{c:02}k"), i, batch, &value);
                let t0 = Instant::now();
                let (_, version) = client.update(op, mode, WAIT).await.expect("update commits");
                client_latency.push(t0.elapsed());
                if mode != Mode::OnePhase {
                    all_reached(&mut versions, version).await;
                    all_slaves_latency.push(t0.elapsed());
                }
                last = last.max(version);
            }
            (client, last, client_latency, all_slaves_latency)
        }));
    }
    let mut result = Run::default();
    let mut last = 0;
    for t in tasks {
        let (client, v, cl, al) = t.await.expect("client task");
        clients.push(client);
        last = last.max(v);
        result.ops += (cl.len() * batch) as u64;
        result.client_latency.extend(cl);
        result.all_slaves_latency.extend(al);
    }
    all_reached(&mut cluster.slave_versions(), last).await;
    result.elapsed = started.elapsed();
    result
}

/// Runs one-phase updates through the master's embedding API with up to `window` updates in
/// flight (the pipelined counterpart of a client), then waits until every slave has them.
/// Returns the updates done and the time from the first submit to the last update on every
/// slave.
pub async fn run_pipelined<S: BenchStore>(
    cluster: &Cluster<S>,
    load: Load,
    window: usize,
    value_bytes: usize,
) -> (u64, Duration) {
    let value = vec![0x5a_u8; value_bytes];
    let started = Instant::now();
    let (ops, until) = match load {
        Load::Ops(ops) => (ops, None),
        Load::For(d) => (u64::MAX, Some(started + d)),
    };
    let mut in_flight = std::collections::VecDeque::new();
    let mut last = 0;
    let mut done = 0;
    for i in 0..ops {
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        if in_flight.len() >= window {
            let ticket: Ticket = in_flight.pop_front().expect("the window is full");
            last = last.max(ticket.outcome().await.expect("update commits"));
        }
        let op = S::puts("p", i, 1, &value);
        in_flight.push_back(
            cluster
                .master
                .submit(op, Mode::OnePhase)
                .await
                .expect("submitted"),
        );
        done += 1;
    }
    for ticket in in_flight {
        last = last.max(ticket.outcome().await.expect("update commits"));
    }
    all_reached(&mut cluster.slave_versions(), last).await;
    (done, started.elapsed())
}

/// The `q`-quantile (0..=1) of `samples` (sorted in place), or zero when empty.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}
