//! Protocol 2 with real `replicore failover serve` processes on 127.0.0.1 and the embedding
//! API's client: the master SIGKILLed under a write load (the backup takes over, no
//! acknowledged update is lost, the restarted master rejoins as a slave with identical data),
//! and the master cut off from the client only (no takeover, no split brain).
//!
//! Every test runs under a `tokio::time::timeout`; waits poll a real outcome with a deadline.

mod common;

use replicore_model::failover::Timing;
use replicore_runtime::failover::{Client, role_of};
use replicore_runtime::runtime::codec::Reply;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_replicore");
const KEY: &str = "failover-key-0123456789";
const CLUSTER: u64 = 7;
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP link in front of `target` that can be partitioned: after [`Partition::cut`] every
/// byte either way is read and dropped (connections stay open, new ones are accepted and
/// hang), as a network that silently loses everything between the two ends.
struct Partition {
    addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    async fn new(target: String) -> Self {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::spawn(pump(ir, ow, flag.clone()));
                tokio::spawn(pump(or, iw, flag.clone()));
            }
        });
        Partition { addr, cut }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes, dropping everything once `cut` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

struct Cluster {
    heartbeat_ms: u64,
    dir: tempfile::TempDir,
    config: PathBuf,
    addrs: Vec<String>,
    children: BTreeMap<u64, Child>,
    launches: u32,
}

impl Cluster {
    /// A master and a backup; the servers heartbeat every `heartbeat_ms`, check the lease
    /// every five periods, and a client retries after three.
    fn new(heartbeat_ms: u64) -> Self {
        Cluster::with_extra(heartbeat_ms, "")
    }

    /// The same, with `extra` appended to the cluster file (a `[faults]` table).
    fn with_extra(heartbeat_ms: u64, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<String> = (0..2)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let config = dir.path().join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                "cluster_id = {CLUSTER}\nkey = \"{KEY}\"\nmaster = \"{}\"\nslaves = [\"{}\"]\nheartbeat_ms = {heartbeat_ms}\n{extra}",
                addrs[0], addrs[1]
            ),
        )
        .expect("write config");
        Cluster {
            heartbeat_ms,
            dir,
            config,
            addrs,
            children: BTreeMap::new(),
            launches: 0,
        }
    }

    async fn start(&mut self, id: u64) {
        self.launches += 1;
        let log = self
            .dir
            .path()
            .join(format!("node{id}-{}.log", self.launches));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("--init")
            .args(["failover", "serve", "--id", &id.to_string(), "--data-dir"])
            .arg(self.dir.path().join(format!("data{id}")))
            .arg("--trace-dir")
            .arg(self.dir.path().join("trace"))
            .stdout(out)
            .stderr(err)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawn replicore");
        self.children.insert(id, child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening on") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server {id} did not start: {text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `replicore --config .. ARGS` to completion (bounded).
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("cli runs")
    }

    /// SIGKILLs server `id`.
    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    /// The timing the servers derive from `heartbeat_ms` (see `FailoverCluster::timing`).
    fn timing(&self) -> Timing {
        let ms = |n: u64| Duration::from_millis(self.heartbeat_ms * n);
        Timing {
            heartbeat: ms(1)..ms(1),
            lease_check: ms(5)..ms(5),
            retry: ms(3)..ms(3),
        }
    }

    fn client(&self, master: &str) -> Client {
        Client::new(
            master,
            &self.addrs[1],
            CLUSTER,
            KEY.as_bytes(),
            self.timing(),
        )
    }

    /// (role, epoch, version, digest) of server `id`.
    async fn role(&self, id: usize) -> Option<(String, u64, u64, [u8; 32])> {
        match role_of(&self.addrs[id], CLUSTER, KEY.as_bytes()).await {
            Ok(Reply::Role {
                role,
                epoch,
                version,
                digest,
                ..
            }) => Some((role, epoch, version, digest)),
            _ => None,
        }
    }

    /// Polls server `id` until `ok` holds of its role, or fails after 20 s.
    async fn wait_role(
        &self,
        id: usize,
        what: &str,
        ok: impl Fn(&(String, u64, u64, [u8; 32])) -> bool,
    ) -> (String, u64, u64, [u8; 32]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.role(id).await;
            if let Some(r) = r.as_ref().filter(|r| ok(r)) {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server {id}: {what}; last seen {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The master is SIGKILLed while a client writes: the backup's lease lapses, it takes over
/// in epoch 1, the client fails over by itself, every acknowledged update is at the backup,
/// and the restarted master rejoins as a slave with identical data.
#[tokio::test]
async fn a_master_killed_under_load_fails_over_without_losing_an_acknowledged_update() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(50);
        c.start(0).await;
        c.start(1).await;
        let mut client = c.client(&c.addrs[0].clone());
        let within = Duration::from_secs(10);
        // The writer runs on its own; the master dies at whatever point it has reached
        // after 15 acknowledgements (often with an update in flight).
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let writer = tokio::spawn(async move {
            for i in 0..40u32 {
                let (k, v) = (format!("k{i}"), format!("v{i}"));
                let version = client
                    .put(&k, v.as_bytes(), within)
                    .await
                    .unwrap_or_else(|e| panic!("put {k}: {e}"));
                let _ = tx.send((k, v, version)).await;
            }
            client
        });
        let mut acked: BTreeMap<String, (String, u64)> = BTreeMap::new();
        while let Some((k, v, version)) = rx.recv().await {
            acked.insert(k, (v, version));
            if acked.len() == 15 {
                c.kill(0);
            }
        }
        let mut client = writer.await.expect("writer");
        let versions: Vec<u64> = (0..40).map(|i| acked[&format!("k{i}")].1).collect();
        assert_eq!(
            versions,
            (1..=40).collect::<Vec<u64>>(),
            "one version per update, in order"
        );
        let (role, epoch, version, _) = c
            .wait_role(1, "the backup took over", |r| r.0 == "approver")
            .await;
        assert_eq!((role.as_str(), epoch, version), ("approver", 1, 40));
        // Every acknowledged update reads back at the approver (linearizable reads).
        for (k, (v, _)) in &acked {
            let (got, _) = client.get(k, within).await.expect("get");
            assert_eq!(
                got.as_deref(),
                Some(v.as_bytes()),
                "{k} survived the takeover"
            );
        }
        // The CLI's client fails over by itself too (the master is still down), and `status`
        // shows each server's role and epoch.
        let out = c.cli(&["failover", "put", "cli", "yes"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "written: version 41\n"
        );
        let out = c.cli(&["failover", "status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("server 0") && text.contains("unreachable"),
            "{text}"
        );
        assert!(
            text.contains("role approver  epoch 1  version 41"),
            "{text}"
        );
        let backup_digest = c.wait_role(1, "still the approver", |r| r.2 == 41).await.3;
        // The old master comes back, learns epoch 1, follows as a slave and catches up.
        c.start(0).await;
        let (role, epoch, version, digest) = c
            .wait_role(0, "the old master rejoined and caught up", |r| {
                r.0 == "slave" && r.2 == 41
            })
            .await;
        assert_eq!((role.as_str(), epoch, version), ("slave", 1, 41));
        assert_eq!(digest, backup_digest, "identical data");
        // Writes go on at the approver and reach the rejoined slave.
        let v = client
            .put("after", b"rejoin", within)
            .await
            .expect("put after rejoin");
        assert_eq!(v, 42);
        c.wait_role(0, "the slave follows", |r| r.2 == 42).await;
        let out = c.cli(&["failover", "status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("role slave  epoch 1  version 42"), "{text}");
        // Every step of both servers, the killed master's incarnation and its restart
        // included, replays through the model's server actor with exactly its commands.
        let trace = c.dir.path().join("trace");
        let out = c.cli(&[
            "failover",
            "check-trace",
            trace.to_str().expect("utf-8 path"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.starts_with("conforms:") && text.contains("1 restarts"),
            "{text}"
        );
    })
    .await
    .expect("bounded");
}

/// The client's link to the master is partitioned after a first write (cut off from it
/// alone; the master and the backup still talk): the client goes to the backup and says the master is unable, but the master
/// keeps renewing the backup's lease, so the backup does not take over. No split brain: the
/// write is not approved by the backup, both servers stay in epoch 0 in their roles, and a
/// client that reaches the master writes through it.
#[tokio::test]
async fn a_master_cut_off_from_the_client_only_is_not_deposed() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // A slower heartbeat (lease check 1 s): a loaded machine must not starve the live
        // master's renewals for a whole check, which would be a real takeover, not this test.
        let mut c = Cluster::new(200);
        c.start(0).await;
        c.start(1).await;
        // The client reaches the master through a link that is then partitioned: bytes
        // both ways are swallowed, connections stay open, new ones hang.
        let link = Partition::new(c.addrs[0].clone()).await;
        let mut cut_off = c.client(&link.addr);
        let v = cut_off
            .put("w", b"0", Duration::from_secs(10))
            .await
            .expect("a put through the link before the partition");
        assert_eq!(v, 1);
        link.cut();
        let r = cut_off.put("x", b"1", Duration::from_secs(3)).await;
        assert!(
            r.is_err(),
            "the backup must not approve on a client's suspicion: {r:?}"
        );
        let master = c.role(0).await.expect("master reachable");
        assert_eq!((master.0.as_str(), master.1, master.2), ("master", 0, 1));
        let backup = c
            .wait_role(1, "the backup holds the first write", |r| r.2 >= 1)
            .await;
        assert_eq!((backup.0.as_str(), backup.1, backup.2), ("backup", 0, 1));
        let mut client = c.client(&c.addrs[0].clone());
        let v = client
            .put("x", b"2", Duration::from_secs(10))
            .await
            .expect("put through the master");
        assert_eq!(v, 2);
        let backup = c.wait_role(1, "the backup stored it", |r| r.2 == 2).await;
        assert_eq!((backup.0.as_str(), backup.1), ("backup", 0));
    })
    .await
    .expect("bounded");
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The keys the chaos clients share.
const CHAOS_KEYS: u32 = 4;
/// How long a chaos client waits for one operation before its outcome is unknown.
const CHAOS_WITHIN: Duration = Duration::from_secs(3);

/// What the chaos clients saw: the history the model's tester judges, and counts.
#[derive(Default)]
struct Seen {
    history: replicore_model::failover::model::StoreHistory<String, Vec<u8>>,
    written: usize,
    read: usize,
    unknown: usize,
    /// A client recorded an invalid history (a harness bug, never the cluster's).
    invalid: Vec<String>,
}

type SharedSeen = std::sync::Arc<std::sync::Mutex<Seen>>;

fn seen(s: &SharedSeen) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `op` through `client` as history thread `thread`; whether it was answered.
async fn recorded(
    client: &mut Client,
    thread: u64,
    op: replicore_model::failover::ClientOp<String, Vec<u8>>,
    log: &SharedSeen,
) -> bool {
    use replicore_model::failover::{Answer, ClientOp};
    use replicore_model::store::KvOp;
    if let Err(e) = seen(log).history.invoke(thread, &op) {
        seen(log).invalid.push(e);
    }
    let answer = match &op {
        ClientOp::Update(KvOp::Put(k, v)) => client
            .put(k, v, CHAOS_WITHIN)
            .await
            .map(|version| Answer::Written { version }),
        ClientOp::Update(KvOp::Delete(k)) => client
            .delete(k, CHAOS_WITHIN)
            .await
            .map(|version| Answer::Written { version }),
        ClientOp::Read(k) => client
            .get(k, CHAOS_WITHIN)
            .await
            .map(|(value, version)| Answer::Value { value, version }),
    };
    let mut s = seen(log);
    match answer {
        Ok(a) => {
            if matches!(a, Answer::Written { .. }) {
                s.written += 1;
            } else {
                s.read += 1;
            }
            if let Err(e) = s.history.answer(thread, &a) {
                s.invalid.push(e);
            }
            true
        }
        Err(_) => {
            s.unknown += 1;
            false
        }
    }
}

/// One chaos client until `until`: puts of unique values, deletes and reads of the shared
/// keys, one at a time. An operation left unanswered stays invoked in the history (it may
/// still take effect) and the client goes on as a new history thread.
async fn chaos_client(
    index: u64,
    mut client: Client,
    seed: u64,
    until: tokio::time::Instant,
    log: SharedSeen,
) -> Client {
    use rand::{Rng, SeedableRng};
    use replicore_model::failover::ClientOp;
    use replicore_model::store::KvOp;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1_000 + index);
    let mut thread = index << 32;
    let mut n = 0u64;
    while tokio::time::Instant::now() < until {
        n += 1;
        let key = format!("k{}", rng.random_range(0..CHAOS_KEYS));
        let op = match rng.random_range(0..100) {
            0..50 => ClientOp::Update(KvOp::Put(key, format!("c{index}-{n}").into_bytes())),
            50..60 => ClientOp::Update(KvOp::Delete(key)),
            _ => ClientOp::Read(key),
        };
        if !recorded(&mut client, thread, op, &log).await {
            thread += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(15..40))).await;
    }
    client
}

/// One seed of the failover chaos test (see the test).
async fn failover_chaos(seed: u64) -> Result<String, String> {
    use rand::{Rng, SeedableRng};
    use replicore_model::failover::ClientOp;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let by_kill = seed % 2 == 1;
    // The partition schedule counts from `origin` (wall clock, read by both processes); the
    // workload starts then too.
    let origin = now_unix_ms() + 1_000;
    let t0 = tokio::time::Instant::now() + Duration::from_millis(1_000);
    let depose_ms = rng.random_range(2_000..3_000u64);
    let partition = if by_kill {
        String::new()
    } else {
        format!(
            "[[faults.partitions]]\nstart_ms = {depose_ms}\nend_ms = {}\nisolate = [0]\n",
            depose_ms + rng.random_range(1_200..1_800u64)
        )
    };
    let faults = format!(
        "[faults]\nseed = {seed}\nloss = 0.02\nduplicate = 0.02\nreorder = 0.05\nreorder_ms = 10\n\
         delay_ms = [0, 2]\nepoch_unix_ms = {origin}\n{partition}"
    );
    let mut c = Cluster::with_extra(50, &faults);
    c.start(0).await;
    c.start(1).await;
    tokio::time::sleep_until(t0).await;
    let until = t0 + Duration::from_secs(10);
    let log = SharedSeen::default();
    let clients: Vec<_> = (0..3u64)
        .map(|i| {
            let client = c.client(&c.addrs[0].clone());
            tokio::spawn(chaos_client(i, client, seed, until, log.clone()))
        })
        .collect();
    // The schedule of SIGKILLs: the master (when it is the way it is deposed), then the
    // deposed master, then the approver that took over, each restarted from its data.
    let mut kills = Vec::new();
    if by_kill {
        kills.push((depose_ms, 0u64, rng.random_range(500..1_000u64)));
    }
    kills.push((
        rng.random_range(5_500..6_500),
        0,
        rng.random_range(200..500),
    ));
    kills.push((
        rng.random_range(7_500..8_500),
        1,
        rng.random_range(300..600),
    ));
    for (at, id, down) in &kills {
        tokio::time::sleep_until(t0 + Duration::from_millis(*at)).await;
        c.kill(*id);
        tokio::time::sleep(Duration::from_millis(*down)).await;
        c.start(*id).await;
    }
    let mut clients_back = Vec::new();
    for t in clients {
        clients_back.push(t.await.map_err(|e| format!("a client task failed: {e}"))?);
    }
    // Convergence, with the faults still on: one approver in epoch 1, the deposed master its
    // slave, identical data.
    let approver = c
        .wait_role(1, "the backup took over", |r| r.0 == "approver" && r.1 >= 1)
        .await;
    let slave = c
        .wait_role(0, "the old master follows with identical data", |r| {
            r.0 == "slave" && r.1 == approver.1 && r.2 == approver.2 && r.3 == approver.3
        })
        .await;
    // Every key read once more, at the end, joins the history.
    let mut last = clients_back.pop().ok_or("no client")?;
    let final_thread = 99 << 32;
    for k in 0..CHAOS_KEYS {
        if !recorded(
            &mut last,
            final_thread + k as u64,
            ClientOp::Read(format!("k{k}")),
            &log,
        )
        .await
        {
            return Err(format!("the final read of k{k} was not answered"));
        }
    }
    let (written, read, unknown) = {
        let s = seen(&log);
        if !s.invalid.is_empty() {
            return Err(format!("the recorded history is invalid: {:?}", s.invalid));
        }
        if let Some(v) = s.history.violation() {
            let mut v = v;
            v.truncate(4_000);
            return Err(format!("the clients' history is not linearizable: {v}"));
        }
        (s.written, s.read, s.unknown)
    };
    if written < 100 || read < 50 {
        return Err(format!(
            "too little load to judge: {written} writes, {read} reads answered"
        ));
    }
    // Every step of every incarnation replays through the server actor.
    for id in [0, 1] {
        c.kill(id);
    }
    let trace = c.dir.path().join("trace");
    let out = c.cli(&[
        "failover",
        "check-trace",
        trace.to_str().ok_or("a non-UTF-8 path")?,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !text.starts_with("conforms:") {
        return Err(format!(
            "check-trace: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(format!(
        "failover chaos seed={seed} (deposed by {}): answered writes={written} reads={read}, \
         unknown={unknown}; SIGKILLs={}; final epoch {} version {} at both ({}, {}); \
         linearizable; {text}",
        if by_kill { "SIGKILL" } else { "a partition" },
        kills.len(),
        approver.1,
        approver.2,
        approver.0,
        slave.0,
    ))
}

/// Chaos, seeded: a master and a backup as real processes injecting loss, duplication,
/// delay and reordering into the frames between them, three clients writing, deleting and
/// reading four shared keys through the model's client actor, while the master is deposed
/// (SIGKILLed under load, or cut off by a partition until its lease lapses), the deposed
/// master and then the approver that took over are SIGKILLed and restarted. Then: one
/// approver in epoch 1 with its slave at identical data, the clients' history (final reads
/// included) linearizable by the model's register tester key by key, and every step of
/// every incarnation conforming to the server actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_partitions_and_lease_lapses_keep_the_clients_history_linearizable() {
    common::run_seeds("failover chaos", "failover", TEST_TIMEOUT, failover_chaos).await;
}
