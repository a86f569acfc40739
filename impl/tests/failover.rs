//! Protocol 2 with real `replicore failover serve` processes on 127.0.0.1 and the embedding
//! API's client: the master SIGKILLed under a write load (the backup takes over, no
//! acknowledged update is lost, the restarted master rejoins as a slave with identical data),
//! and the master cut off from the client only (no takeover, no split brain).
//!
//! Every test runs under a `tokio::time::timeout`; waits poll a real outcome with a deadline.

use replicore_model::failover::Timing;
use replicore_runtime::failover::{Client, role_of};
use replicore_runtime::runtime::codec::Reply;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_replicore");
const KEY: &str = "failover-key";
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
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<String> = (0..2)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let config = dir.path().join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                "cluster_id = {CLUSTER}\nkey = \"{KEY}\"\nmaster = \"{}\"\nslaves = [\"{}\"]\nheartbeat_ms = {heartbeat_ms}\n",
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
