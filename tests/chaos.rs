//! The chaos test: 1 master and 3 slaves as real processes on 127.0.0.1, each injecting
//! faults into the frames it sends (loss, duplication, delay, reordering, scheduled
//! partitions; `replicore_runtime::runtime::faults`) and recording its trace, while clients run a
//! workload of one-phase and two-phase updates, deletes and rollbacks, and the harness
//! SIGKILLs slaves and the master and restarts them from their data directories. Every
//! second slave it kills also suffers a storage fault while down, damaged and lost in turn:
//! its keys' bytes flipped in its file, or its data directory removed (the node is created
//! again).
//!
//! At the end the faults stop (every node restarts without them) and the test checks:
//! - convergence: every slave reaches the master's version, with identical data;
//! - the client-side history: every update a client was told committed is on every node,
//!   no update told aborted is visible anywhere, each slave's observed versions only grow
//!   (between its storage faults, after which it starts again from version 0);
//! - trace conformance: the traces replay through the model (`replicore_runtime::master_slave::conformance`),
//!   every storage fault replayed as the model's.
//!
//! It prints one summary line per seed. `docs/reliability.md` says how to run a soak, how to
//! reproduce a seed, and how a deliberately broken runtime is caught.
//!
//! This file is its own harness (`harness = false`): started with `REPLICORE_CHAOS_NODE` set,
//! the same executable runs one node (the nodes are these processes, so that they can be
//! SIGKILLed); otherwise it runs the test.
//!
//! Environment:
//! - `REPLICORE_CHAOS_SEEDS=1,2`: the seeds to run (default: the fixed CI set).
//! - `REPLICORE_SOAK=1`: a longer run per seed (up to 100 000 updates, 66 keys, a kill every
//!   2–6 s) for `REPLICORE_SOAK_SECS` seconds (default 600).
//! - `REPLICORE_CHAOS_BROKEN=1`: nodes send a step's messages before its save is durable
//!   (`DriverOptions::unsafe_send_before_save`); the test is expected to fail.
//! - `REPLICORE_CHAOS_KEEP=1`: keep the run directory (traces, logs) even on success.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replicore_model::store::KvOp;
use replicore_runtime::master_slave::client::{Client, ClientError};
use replicore_runtime::master_slave::conformance;
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use replicore_runtime::runtime::faults::{FaultCounts, FaultPlan, Partition};
use replicore_runtime::{KvStore, Mode, UpdateError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLUSTER: u64 = 77;
const KEY: &str = "chaos-key";
const SLAVES: u64 = 3;
const NODE_ENV: &str = "REPLICORE_CHAOS_NODE";
/// The fixed seed set run by `cargo test`.
const CI_SEEDS: [u64; 2] = [1, 2];

/// How one node process runs (passed as JSON in `REPLICORE_CHAOS_NODE`).
#[derive(Debug, Deserialize, Serialize)]
struct NodeSpec {
    node_id: u64,
    listen: String,
    master: String,
    data_dir: PathBuf,
    trace_dir: PathBuf,
    faults: Option<FaultPlan>,
    broken: bool,
}

fn main() {
    if let Ok(spec) = std::env::var(NODE_ENV) {
        node_main(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("chaos: test");
        return;
    }
    // Honour a name filter the way libtest does: skip unless "chaos" contains it.
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"chaos".contains(filter.as_str())
    {
        println!("running 0 tests (filtered out)");
        return;
    }
    if args.iter().any(|a| a == "--ignored") {
        println!("running 0 tests (none ignored)");
        return;
    }
    let soak = std::env::var("REPLICORE_SOAK").is_ok_and(|v| v == "1");
    let seeds: Vec<u64> = match std::env::var("REPLICORE_CHAOS_SEEDS") {
        Ok(s) => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .expect("REPLICORE_CHAOS_SEEDS: comma-separated u64s")
            })
            .collect(),
        Err(_) => CI_SEEDS.to_vec(),
    };
    let broken = std::env::var("REPLICORE_CHAOS_BROKEN").is_ok_and(|v| v == "1");
    let shape = if soak { Shape::soak() } else { Shape::ci() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut failed = Vec::new();
    for seed in seeds {
        let outcome = runtime.block_on(run_seed(seed, &shape, broken));
        match outcome {
            Ok(summary) => println!("{summary}"),
            Err(e) => {
                println!("chaos seed={seed}: FAILED: {e}");
                failed.push(seed);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "chaos: seeds {failed:?} failed; reproduce one with REPLICORE_CHAOS_SEEDS={} cargo test --release -p replicore --test chaos",
            failed[0]
        );
        std::process::exit(1);
    }
}

/// Runs one node until SIGTERM (graceful) or SIGKILL.
fn node_main(spec: &str) {
    let spec: NodeSpec = serde_json::from_str(spec).expect("node spec");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let mut cfg = NodeConfig::new(CLUSTER, KEY, spec.node_id, SLAVES, &spec.data_dir);
        cfg.init = true;
        cfg.master_addr = spec.master.clone();
        cfg.listen = spec.listen.clone();
        cfg.heartbeat = Duration::from_millis(50)..Duration::from_millis(75);
        cfg.history = 32;
        cfg.faults = spec.faults;
        cfg.trace_dir = Some(spec.trace_dir);
        cfg.unsafe_send_before_save = spec.broken;
        let mut node = Node::<KvStore>::start(cfg).await.expect("node starts");
        println!(
            "listening on {} at version {}",
            node.local_addr(),
            node.version()
        );
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = term.recv() => {}
            r = node.stopped() => {
                eprintln!("node stopped: {r:?}");
                std::process::exit(3);
            }
        }
        node.shutdown().await.expect("graceful shutdown");
    });
}

/// The size of a run.
struct Shape {
    /// Updates to run (the workload also stops at `time_cap`).
    updates: usize,
    time_cap: Duration,
    /// Keys (each owned by one client task, so per-key order is the task's order).
    keys: usize,
    clients: usize,
    /// Mean time between SIGKILLs.
    kill_every: Duration,
}

impl Shape {
    fn ci() -> Self {
        Shape {
            updates: 1500,
            time_cap: Duration::from_secs(45),
            // Enough keys that the store's map spans several nodes, so the incremental save
            // diffs partly shared trees (where imbl 6's diff bug lived).
            keys: 66,
            clients: 6,
            kill_every: Duration::from_secs(3),
        }
    }

    fn soak() -> Self {
        let secs = std::env::var("REPLICORE_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        Shape {
            updates: 100_000,
            time_cap: Duration::from_secs(secs),
            keys: 66,
            clients: 6,
            kill_every: Duration::from_secs(4),
        }
    }
}

fn free_port() -> u16 {
    // Bind port 0 and release it: the OS hands out a free port, which the node binds next.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The node processes.
struct Cluster {
    root: PathBuf,
    ports: Vec<u16>,
    children: BTreeMap<u64, Child>,
    launches: u32,
    plan: FaultPlan,
    broken: bool,
    kills: [u32; 2],
    /// Storage faults injected: [damaged, lost].
    disk_faults: [u32; 2],
    /// Slaves stopped gracefully (to damage their store) during the faults.
    stops: u32,
}

/// What happens to a killed slave's store before it restarts.
#[derive(Clone, Copy)]
enum DiskFault {
    /// One bit flipped in every copy of every key's name in the file.
    Damaged,
    /// The data directory removed; the node is created again.
    Lost,
}

/// `bytes` with the last digit of every workload key's name (`key000`, `key001`, ...)
/// changed, in every copy (redb copies pages on write, so stale copies change too), and how
/// many there were. Every data row fails its check then, wherever it is stored.
fn damage_keys(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut out = bytes.to_vec();
    let mut found = 0;
    for at in 0..bytes.len().saturating_sub(6) {
        let name = &bytes[at..at + 6];
        if name.starts_with(b"key0") && name[4..].iter().all(u8::is_ascii_digit) {
            out[at + 5] ^= 0x01;
            found += 1;
        }
    }
    (out, found)
}

impl Cluster {
    fn addr(&self, node: u64) -> String {
        format!("127.0.0.1:{}", self.ports[node as usize])
    }

    fn trace_dir(&self) -> PathBuf {
        self.root.join("trace")
    }

    /// Starts node `id` (with or without faults) and waits until it listens.
    async fn start(&mut self, id: u64, faults: bool) -> Result<(), String> {
        self.launches += 1;
        let log = self.root.join(format!("node{id}-{}.log", self.launches));
        let spec = NodeSpec {
            node_id: id,
            listen: self.addr(id),
            master: self.addr(MASTER_ID),
            data_dir: self.root.join(format!("data{id}")),
            trace_dir: self.trace_dir(),
            faults: faults.then(|| self.plan.clone()),
            broken: self.broken,
        };
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .env(NODE_ENV, serde_json::to_string(&spec).unwrap())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn node {id}: {e}"))?;
        self.children.insert(id, child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(());
            }
            if Instant::now() > deadline || text.contains("panicked") {
                return Err(format!("node {id} did not start: {text}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Injects `fault` into the store of slave `id`, which is down; whether there was
    /// anything to damage.
    fn damage(&mut self, id: u64, fault: DiskFault) -> Result<bool, String> {
        let dir = self.root.join(format!("data{id}"));
        match fault {
            DiskFault::Lost => {
                std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {dir:?}: {e}"))?;
                self.disk_faults[1] += 1;
            }
            DiskFault::Damaged => {
                let file = dir.join("replicore.redb");
                let bytes = std::fs::read(&file).map_err(|e| format!("read {file:?}: {e}"))?;
                let (damaged, found) = damage_keys(&bytes);
                if found == 0 {
                    return Ok(false);
                }
                std::fs::write(&file, damaged).map_err(|e| format!("write {file:?}: {e}"))?;
                self.disk_faults[0] += 1;
            }
        }
        Ok(true)
    }

    /// SIGKILLs node `id`.
    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
            self.kills[usize::from(id != MASTER_ID)] += 1;
        }
    }

    /// SIGTERMs node `id` and waits for its graceful exit.
    async fn stop(&mut self, id: u64) -> Result<(), String> {
        let Some(mut child) = self.children.remove(&id) else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("node {id} exited with {status} on SIGTERM"));
        }
        Ok(())
    }

    fn is_up(&self, id: u64) -> bool {
        self.children.contains_key(&id)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            if let Some(mut c) = self.children.remove(&id) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// What the client was told about one update.
#[derive(Clone, Debug, PartialEq)]
enum Told {
    Committed(u64),
    Aborted(u64),
    Unknown,
}

/// One update of the workload.
#[derive(Clone, Debug)]
struct Update {
    key: String,
    /// The value written, or `None` for a delete.
    value: Option<Vec<u8>>,
    told: Told,
    rolled_back: bool,
    /// Replicated by two-phase commit (which may share its version with a group).
    two_phase: bool,
}

/// Everything the clients saw.
#[derive(Default)]
struct History {
    /// Per key, its updates in the order its owner issued them.
    by_key: BTreeMap<String, Vec<Update>>,
    /// Per slave, the versions it reported, in order; a new run of them after each storage
    /// fault of the slave.
    observed: BTreeMap<u64, Vec<Vec<u64>>>,
}

fn plan(seed: u64, epoch: u64, time_cap: Duration) -> FaultPlan {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9a27);
    // A partition of 0.5–1.5 s every 4–8 s, isolating one node (sometimes the master).
    let mut partitions = Vec::new();
    let mut t = 2_000;
    let end = time_cap.as_millis() as u64 + 60_000;
    while t < end {
        let len = rng.random_range(500..1_500);
        let node = rng.random_range(0..=SLAVES);
        partitions.push(Partition {
            start_ms: t,
            end_ms: t + len,
            isolate: vec![node],
        });
        t += len + rng.random_range(4_000..8_000);
    }
    FaultPlan {
        seed,
        loss: 0.03,
        duplicate: 0.03,
        reorder: 0.05,
        reorder_ms: 20,
        delay_ms: [0, 2],
        epoch_unix_ms: Some(epoch),
        partitions,
        links: Vec::new(),
    }
}

async fn run_seed(seed: u64, shape: &Shape, broken: bool) -> Result<String, String> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix(&format!("replicore-chaos-{seed}-"))
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut cluster = Cluster {
        root: dir.path().to_path_buf(),
        ports: (0..=SLAVES).map(|_| free_port()).collect(),
        children: BTreeMap::new(),
        launches: 0,
        plan: plan(seed, now_unix_ms(), shape.time_cap),
        broken,
        kills: [0, 0],
        disk_faults: [0, 0],
        stops: 0,
    };
    let result = chaos(seed, shape, &mut cluster, started).await;
    let keep = result.is_err() || std::env::var("REPLICORE_CHAOS_KEEP").is_ok_and(|v| v == "1");
    drop(cluster);
    if keep {
        let path = dir.keep();
        let r = result.map(|s| format!("{s} (run kept in {})", path.display()));
        return r.map_err(|e| {
            format!(
                "{e}\n  run kept in {} (traces: trace/, logs: node*.log)",
                path.display()
            )
        });
    }
    result
}

async fn chaos(
    seed: u64,
    shape: &Shape,
    cluster: &mut Cluster,
    started: Instant,
) -> Result<String, String> {
    for id in 0..=SLAVES {
        cluster.start(id, true).await?;
    }
    let history = Arc::new(Mutex::new(History::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    // Watchers: each slave's reported versions, in order.
    let mut watchers = Vec::new();
    for id in 1..=SLAVES {
        let (addr, history, stop) = (cluster.addr(id), history.clone(), stop.clone());
        watchers.push(tokio::spawn(async move {
            let mut client: Option<Client> = None;
            while !stop.is_cancelled() {
                if client.is_none() {
                    client = Client::connect(&addr, CLUSTER, KEY.as_bytes(), None)
                        .await
                        .ok();
                }
                if let Some(c) = client.as_mut() {
                    match tokio::time::timeout(Duration::from_secs(1), c.status()).await {
                        Ok(Ok(s)) => history
                            .lock()
                            .unwrap()
                            .observed
                            .entry(id)
                            .or_insert_with(|| vec![Vec::new()])
                            .last_mut()
                            .expect("a run of versions")
                            .push(s.version),
                        _ => client = None,
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    // Clients: task t owns keys t, t + clients, ...
    let per_client = shape.updates.div_ceil(shape.clients);
    let mut tasks = Vec::new();
    for t in 0..shape.clients {
        let keys: Vec<String> = (t..shape.keys)
            .step_by(shape.clients)
            .map(|k| format!("key{k:03}"))
            .collect();
        let (master, history, stop, done) = (
            cluster.addr(MASTER_ID),
            history.clone(),
            stop.clone(),
            done.clone(),
        );
        let task_seed = seed.wrapping_mul(1000) + t as u64;
        tasks.push(tokio::spawn(async move {
            client_task(task_seed, master, keys, per_client, history, stop, done).await
        }));
    }

    // The fault schedule: SIGKILL a node now and then, restart it a little later.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4b11);
    let deadline = started + shape.time_cap;
    let mut next_kill = Instant::now() + jitter(&mut rng, shape.kill_every);
    while done.load(std::sync::atomic::Ordering::Relaxed) < shape.clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if Instant::now() >= next_kill {
            // Every fourth node down is the master, the others are random slaves.
            let victim = if (cluster.kills[0] + cluster.kills[1] + cluster.stops) % 4 == 2 {
                MASTER_ID
            } else {
                rng.random_range(1..=SLAVES)
            };
            // Every second slave going down also loses its store or finds it damaged, in
            // turn. A store is damaged after a graceful stop: after a SIGKILL, redb's repair
            // checks its own page checksums first and refuses a file with flipped bytes (a
            // one-line `NotRedb` error, `docs/reliability.md`), before our row checks run.
            let slave_downs = cluster.kills[1] + cluster.stops + 1;
            let fault = (victim != MASTER_ID && slave_downs.is_multiple_of(2)).then_some(
                if slave_downs % 4 == 2 {
                    DiskFault::Damaged
                } else {
                    DiskFault::Lost
                },
            );
            if matches!(fault, Some(DiskFault::Damaged)) {
                cluster.stop(victim).await?;
                cluster.stops += 1;
            } else {
                cluster.kill(victim);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
            if let Some(fault) = fault
                && cluster.damage(victim, fault)?
            {
                history
                    .lock()
                    .unwrap()
                    .observed
                    .entry(victim)
                    .or_default()
                    .push(Vec::new());
            }
            cluster.start(victim, true).await?;
            next_kill = Instant::now() + jitter(&mut rng, shape.kill_every);
        }
    }
    stop.cancel();
    let mut client_errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.map_err(|e| e.to_string())? {
            client_errors.push(e);
        }
    }
    if let Some(e) = client_errors.first() {
        return Err(format!("client: {e}"));
    }

    // Faults stop: every node restarts without them (gracefully).
    for id in 0..=SLAVES {
        if cluster.is_up(id) {
            cluster.stop(id).await?;
        }
        cluster.start(id, false).await?;
    }
    let finals = converge(cluster).await?;
    for w in watchers {
        w.abort();
    }
    let values = read_values(cluster, &history).await?;
    for id in 0..=SLAVES {
        cluster.stop(id).await?;
    }
    let counts = fault_counts(&cluster.trace_dir());

    let history = std::mem::take(&mut *history.lock().unwrap());
    let (stats, mut violations) = check_history(&history, &finals, &values);
    let conformance_started = Instant::now();
    let conformance = conformance::check_dir(&cluster.trace_dir());
    let conformance_time = conformance_started.elapsed();
    let conf_text = match &conformance {
        Ok(r) => {
            let injected = (cluster.disk_faults[0] + cluster.disk_faults[1]) as usize;
            if r.storage_faults != injected {
                violations.push(format!(
                    "trace conformance replayed {} storage faults, {injected} were injected",
                    r.storage_faults
                ));
            }
            format!(
                "conformance: {} steps, {} states checked, {} storage faults, in {:.1} s",
                r.steps,
                r.states_checked,
                r.storage_faults,
                conformance_time.as_secs_f64()
            )
        }
        Err(e) => {
            violations.push(format!("trace conformance: {e}"));
            "conformance: FAILED".to_string()
        }
    };
    let summary = format!(
        "chaos seed={seed}: updates committed={} aborted={} (rolled back {}) unknown={}; \
         faults: dropped={} duplicated={} delayed={} reordered={} partitioned={}; \
         crashes: slaves={} master={}; slave stores damaged={} lost={}; final versions {:?}; \
         {conf_text}; violations={} ({:.0} s)",
        stats.committed,
        stats.aborted,
        stats.rolled_back,
        stats.unknown,
        counts.dropped,
        counts.duplicated,
        counts.delayed,
        counts.reordered,
        counts.partitioned,
        cluster.kills[1],
        cluster.kills[0],
        cluster.disk_faults[0],
        cluster.disk_faults[1],
        finals.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        violations.len(),
        started.elapsed().as_secs_f64(),
    );
    // A run that injected nothing would pass vacuously.
    let injected = [
        ("random loss", counts.dropped),
        ("duplication", counts.duplicated),
        ("reordering", counts.reordered),
        ("partitions", counts.partitioned),
        ("slave crashes", u64::from(cluster.kills[1])),
        ("master crashes", u64::from(cluster.kills[0])),
        ("damaged slave stores", u64::from(cluster.disk_faults[0])),
        ("lost slave stores", u64::from(cluster.disk_faults[1])),
        ("rollbacks", stats.rolled_back as u64),
        ("aborts", stats.aborted as u64),
    ];
    for (what, n) in injected {
        if n == 0 {
            violations.push(format!("the run had no {what}: it proves too little"));
        }
    }
    if !violations.is_empty() {
        let listed: Vec<String> = violations
            .iter()
            .take(5)
            .map(|v| format!("  violation: {v}"))
            .collect();
        return Err(format!("{summary}\n{}", listed.join("\n")));
    }
    let issued = stats.committed + stats.aborted + stats.unknown;
    if stats.committed < issued / 2 || issued < shape.updates.min(1000) / 2 {
        return Err(format!(
            "{summary}\n  too few updates issued ({issued}) or committed to mean anything"
        ));
    }
    Ok(summary)
}

fn jitter(rng: &mut StdRng, mean: Duration) -> Duration {
    let ms = mean.as_millis() as u64;
    Duration::from_millis(rng.random_range(ms / 2..=ms * 3 / 2))
}

async fn client_task(
    seed: u64,
    master: String,
    keys: Vec<String>,
    updates: usize,
    history: Arc<Mutex<History>>,
    stop: tokio_util::sync::CancellationToken,
    done: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let client_id = replicore_runtime::runtime::transport::CLIENT_ID_MIN + seed;
    let connect = || async {
        loop {
            match Client::<KvStore>::connect(&master, CLUSTER, KEY.as_bytes(), Some(client_id))
                .await
            {
                Ok(c) => return c,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    // The client reconnects by itself; one id, one ledger entry, for the whole run.
    let mut client = connect().await;
    let mut counters: BTreeMap<String, u32> = BTreeMap::new();
    let wait = Duration::from_secs(20);
    for _ in 0..updates {
        if stop.is_cancelled() {
            break;
        }
        let key = keys[rng.random_range(0..keys.len())].clone();
        let n = counters.entry(key.clone()).or_default();
        *n += 1;
        // At most 250 distinct values (trace conformance renames them onto u8s); unique per
        // key for the first 250 updates of that key.
        let value = format!("v{}", *n % 250).into_bytes();
        let roll: f64 = rng.random();
        let two_phase = Mode::TwoPhase { timeout_ms: 150 };
        let (op, mode, rollback) = if roll < 0.45 {
            (KvOp::Put(key.clone(), value.clone()), Mode::OnePhase, false)
        } else if roll < 0.70 {
            (KvOp::Put(key.clone(), value.clone()), two_phase, false)
        } else if roll < 0.80 {
            let mode = if rng.random_bool(0.5) {
                Mode::OnePhase
            } else {
                two_phase
            };
            (KvOp::Delete(key.clone()), mode, false)
        } else {
            (KvOp::Put(key.clone(), value.clone()), two_phase, true)
        };
        let written = match &op {
            KvOp::Put(_, v) => Some(v.clone()),
            KvOp::Delete(_) => None,
        };
        let Ok(req) = client.next_req().await else {
            // The master is unreachable (restarting): nothing was sent.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let outcome = if rollback {
            let delay = Duration::from_millis(rng.random_range(0..5));
            let master = master.clone();
            let rollback = async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut c) =
                    Client::<KvStore>::connect(&master, CLUSTER, KEY.as_bytes(), Some(client_id))
                        .await
                {
                    let _ = c.rollback(req, Duration::from_secs(3)).await;
                }
            };
            let (outcome, ()) = tokio::join!(client.update(op, mode, wait), rollback);
            outcome
        } else {
            client.update(op, mode, wait).await
        };
        let (told, rolled_back) = match outcome {
            Ok((r, v)) => {
                if r != req {
                    return Err(format!("request numbers out of step: {r} != {req}"));
                }
                (Told::Committed(v), false)
            }
            Err(ClientError::Update(e)) => match e {
                UpdateError::RolledBack { version } => (Told::Aborted(version), true),
                UpdateError::Refused { version }
                | UpdateError::TimedOut { version }
                | UpdateError::MasterRestarted { version } => (Told::Aborted(version), false),
                _ => (Told::Unknown, false),
            },
            Err(_) => (Told::Unknown, false),
        };
        history
            .lock()
            .unwrap()
            .by_key
            .entry(key.clone())
            .or_default()
            .push(Update {
                key,
                value: written,
                told,
                rolled_back,
                two_phase: mode != Mode::OnePhase,
            });
    }
    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Waits until every slave holds the master's version and data; returns each node's
/// (version, digest).
async fn converge(cluster: &Cluster) -> Result<Vec<(u64, [u8; 32])>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let mut statuses = Vec::new();
        for id in 0..=SLAVES {
            let s = async {
                let mut c =
                    Client::<KvStore>::connect(&cluster.addr(id), CLUSTER, KEY.as_bytes(), None)
                        .await
                        .ok()?;
                c.status().await.ok()
            };
            statuses.push(
                tokio::time::timeout(Duration::from_secs(2), s)
                    .await
                    .ok()
                    .flatten(),
            );
        }
        last = statuses
            .iter()
            .map(|s| s.as_ref().map(|s| (s.version, s.prepared)))
            .collect();
        if let Some(Some(m)) = statuses.first()
            && m.prepared.is_none()
            && statuses.iter().all(|s| {
                s.as_ref().is_some_and(|s| {
                    s.version == m.version && s.digest == m.digest && s.prepared.is_none()
                })
            })
        {
            return Ok(statuses
                .into_iter()
                .flatten()
                .map(|s| (s.version, s.digest))
                .collect());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "no convergence within 60 s: (version, prepared) per node {last:?}"
    ))
}

/// Reads every key of the workload on every node.
async fn read_values(
    cluster: &Cluster,
    history: &Mutex<History>,
) -> Result<Vec<BTreeMap<String, Option<Vec<u8>>>>, String> {
    let keys: Vec<String> = history.lock().unwrap().by_key.keys().cloned().collect();
    let mut all = Vec::new();
    for id in 0..=SLAVES {
        let mut c = Client::<KvStore>::connect(&cluster.addr(id), CLUSTER, KEY.as_bytes(), None)
            .await
            .map_err(|e| format!("read node {id}: {e}"))?;
        let mut values = BTreeMap::new();
        for k in &keys {
            let (_, v) = c
                .get(k.as_bytes())
                .await
                .map_err(|e| format!("read node {id}: {e}"))?;
            values.insert(k.clone(), v);
        }
        all.push(values);
    }
    Ok(all)
}

fn fault_counts(trace: &Path) -> FaultCounts {
    let mut total = FaultCounts::default();
    for e in std::fs::read_dir(trace).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("faults-")
            && name.ends_with(".json")
            && let Ok(bytes) = std::fs::read(e.path())
            && let Ok(c) = serde_json::from_slice::<FaultCounts>(&bytes)
        {
            total += c;
        }
    }
    total
}

#[derive(Default)]
struct Stats {
    committed: usize,
    aborted: usize,
    rolled_back: usize,
    unknown: usize,
}

/// The client-side history check. Returns the counts and every violation found.
fn check_history(
    history: &History,
    finals: &[(u64, [u8; 32])],
    values: &[BTreeMap<String, Option<Vec<u8>>>],
) -> (Stats, Vec<String>) {
    let mut stats = Stats::default();
    let mut violations = Vec::new();
    // Version → the updates told committed as it: one, or a group of two-phase updates.
    let mut committed_versions: BTreeMap<u64, Vec<(String, bool)>> = BTreeMap::new();
    let mut aborted_versions = std::collections::BTreeSet::new();
    let final_min = finals.iter().map(|(v, _)| *v).min().unwrap_or(0);
    for (key, updates) in &history.by_key {
        // What the key may hold at the end: the last update told committed, or any later one
        // whose outcome is unknown.
        let mut candidates: Vec<Option<Vec<u8>>> = vec![None];
        for u in updates {
            match &u.told {
                Told::Committed(v) => {
                    stats.committed += 1;
                    // A version names one state: several updates may share it only as one
                    // two-phase group (group commit), each of a different key here (a key has
                    // one owner, who waits for each answer).
                    let sharing = committed_versions.entry(*v).or_default();
                    if let Some((other, _)) = sharing
                        .iter()
                        .find(|(k, two)| k == key || !two || !u.two_phase)
                    {
                        violations.push(format!(
                            "version {v} told committed twice outside a two-phase group (keys {other} and {key})"
                        ));
                    }
                    sharing.push((u.key.clone(), u.two_phase));
                    if *v > final_min {
                        violations.push(format!(
                            "update of {key} told committed as version {v}, but a node ended at {final_min}"
                        ));
                    }
                    candidates = vec![u.value.clone()];
                }
                Told::Aborted(v) => {
                    stats.aborted += 1;
                    stats.rolled_back += usize::from(u.rolled_back);
                    aborted_versions.insert(*v);
                }
                Told::Unknown => {
                    stats.unknown += 1;
                    candidates.push(u.value.clone());
                }
            }
        }
        for (node, vals) in values.iter().enumerate() {
            let got = vals.get(key).cloned().flatten();
            if !candidates.contains(&got) {
                let aborted = updates
                    .iter()
                    .any(|u| matches!(u.told, Told::Aborted(_)) && u.value == got && got.is_some());
                violations.push(format!(
                    "node {node} holds {key} = {:?}, not the last committed value{}",
                    got.as_deref().map(String::from_utf8_lossy),
                    if aborted {
                        " but an aborted update's"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    for v in &aborted_versions {
        if committed_versions.contains_key(v) {
            violations.push(format!("version {v} told both committed and aborted"));
        }
    }
    for (slave, runs) in &history.observed {
        for seen in runs {
            if let Some(w) = seen.windows(2).find(|w| w[1] < w[0]) {
                violations.push(format!(
                    "slave {slave} went back from version {} to {} (no storage fault between)",
                    w[0], w[1]
                ));
            }
        }
        if let Some(v) = runs.iter().flatten().find(|v| aborted_versions.contains(v)) {
            violations.push(format!("slave {slave} exposed aborted version {v}"));
        }
    }
    (stats, violations)
}
