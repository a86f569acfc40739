//! Real `replicore` processes on 127.0.0.1: replication, SIGKILL and restart, two-phase
//! aborts, handshake refusal and garbage input.
//!
//! These live in `impl/tests/` (not the workspace `tests/`) because Cargo only hands a test
//! the path of a binary built by its own package (`CARGO_BIN_EXE_replicore`).
//!
//! Every test runs under a `tokio::time::timeout`; waits poll a real outcome (a status line,
//! a log line) with a deadline, never a bare sleep.

use futures::SinkExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_replicore");
const KEY: &str = "test-key-0123456789";
const CLUSTER: u64 = 5;
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    // Bind port 0 and release it: the OS hands out a free port, which the node binds next.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One row of `replicore status`.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    version: Option<u64>,
    prepared: Option<u64>,
    digest: Option<String>,
}

struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    ports: Vec<u16>,
    children: BTreeMap<u64, Child>,
    launches: u32,
}

impl Cluster {
    fn new(slaves: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..=slaves).map(|_| free_port()).collect();
        let slave_list: Vec<String> = ports[1..]
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let config = dir.path().join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                "cluster_id = {CLUSTER}\nkey = \"{KEY}\"\nmaster = \"127.0.0.1:{}\"\nslaves = [{}]\nheartbeat_ms = 50\n",
                ports[0],
                slave_list.join(", ")
            ),
        )
        .expect("write config");
        Cluster {
            dir,
            config,
            ports,
            children: BTreeMap::new(),
            launches: 0,
        }
    }

    fn log(&self, node: u64, launch: u32) -> PathBuf {
        self.dir.path().join(format!("node{node}-{launch}.log"))
    }

    /// Starts node `id` (0 = master) and waits until it listens.
    async fn start(&mut self, id: u64) {
        self.start_with(id, &[]).await;
    }

    /// Starts node `id` with extra global flags (they override the cluster file).
    async fn start_with(&mut self, id: u64, flags: &[&str]) {
        self.launches += 1;
        let log = self.log(id, self.launches);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let data = self.dir.path().join(format!("data{id}"));
        let mut cmd = Command::new(BIN);
        // --init: created on the first start, opened and checked on every restart.
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--init")
            .args(flags);
        if id == 0 {
            cmd.args(["master", "--data-dir"]).arg(&data);
        } else {
            cmd.args(["slave", "--id", &id.to_string(), "--data-dir"])
                .arg(&data);
        }
        let child = cmd
            .stdout(out)
            .stderr(err)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawn replicore");
        self.children.insert(id, child);
        wait_for_line(&log, "listening on").await;
    }

    /// SIGKILLs node `id`.
    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    /// All logs of node `id` so far.
    fn logs(&self, id: u64) -> String {
        (1..=self.launches)
            .filter_map(|l| std::fs::read_to_string(self.log(id, l)).ok())
            .collect()
    }

    async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("cli bounded")
            .expect("cli runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "replicore {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn status(&self) -> Vec<Row> {
        let out = self.cli(&["status"]).await;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let after = |w: &str| {
                    words
                        .iter()
                        .position(|x| *x == w)
                        .and_then(|i| words.get(i + 1))
                        .map(|s| s.to_string())
                };
                Row {
                    version: after("version").and_then(|v| v.parse().ok()),
                    prepared: after("prepared").and_then(|v| v.parse().ok()),
                    digest: after("digest"),
                }
            })
            .collect()
    }

    /// Waits until every node reports the same version (at least `min`), no prepared update
    /// and the same data digest.
    async fn converged(&self, min: u64) -> Vec<Row> {
        loop {
            let rows = self.status().await;
            let first = rows.first().cloned();
            let all_same = rows.len() == self.ports.len()
                && rows.iter().all(|r| {
                    Some(r) == first.as_ref()
                        && r.version.is_some_and(|v| v >= min)
                        && r.prepared.is_none()
                });
            if all_same {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, node: u64, key: &str) -> Option<String> {
        let out = self.cli(&["get", key, "--node", &node.to_string()]).await;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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

async fn wait_for_line(path: &Path, needle: &str) {
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn committed_version(stdout: &str) -> u64 {
    // "committed version V (client C request R)"
    stdout
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {stdout:?}"))
}

#[tokio::test]
async fn one_and_two_phase_updates_reach_both_slaves() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        for id in 0..=2 {
            c.start(id).await;
        }
        for i in 0..5 {
            c.ok(&["put", &format!("one{i}"), &format!("v{i}")]).await;
        }
        let mut last = 0;
        for i in 0..3 {
            // The protocol's own command shape (`put` above is its top-level alias).
            last = committed_version(
                &c.ok(&[
                    "master-slave",
                    "put",
                    &format!("two{i}"),
                    &format!("w{i}"),
                    "--two-phase",
                    "--timeout",
                    "5000",
                ])
                .await,
            );
        }
        let deleted = committed_version(&c.ok(&["master-slave", "delete", "one0"]).await);
        assert!(deleted > last);
        let rows = c.converged(deleted).await;
        assert_eq!(rows[0].version, Some(9));
        for node in 0..=2 {
            assert_eq!(c.get(node, "one4").await.as_deref(), Some("v4"));
            assert_eq!(c.get(node, "two2").await.as_deref(), Some("w2"));
            assert_eq!(c.get(node, "one0").await, None);
        }
    })
    .await
    .expect("test bounded");
}

/// Streams `count` one-phase puts `s{i}` = `v{i}` through the master with the library client,
/// publishing how many committed; returns the keys the master said were committed.
fn stream_puts(
    master: String,
    count: u32,
    progress: tokio::sync::watch::Sender<u32>,
) -> tokio::task::JoinHandle<Vec<u32>> {
    tokio::spawn(async move {
        let mut client = loop {
            match replicore_runtime::master_slave::client::Client::<replicore_runtime::KvStore>::connect(
                &master,
                CLUSTER,
                KEY.as_bytes(),
                None,
            )
            .await
            {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut committed = Vec::new();
        for i in 0..count {
            // The client re-sends and reconnects until answered; the master's ledger makes
            // a re-sent request apply at most once.
            let r = client
                .put(
                    &format!("s{i}"),
                    format!("v{i}").as_bytes(),
                    replicore_runtime::Mode::OnePhase,
                    Duration::from_secs(30),
                )
                .await;
            if r.is_ok() {
                committed.push(i);
            }
            progress.send_replace(committed.len() as u32);
        }
        committed
    })
}

#[tokio::test]
async fn a_slave_killed_mid_stream_restarts_and_catches_up() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        for id in 0..=2 {
            c.start(id).await;
        }
        let (tx, mut progress) = tokio::sync::watch::channel(0);
        let stream = stream_puts(format!("127.0.0.1:{}", c.ports[0]), 60, tx);
        progress.wait_for(|n| *n >= 10).await.expect("stream runs");
        c.kill(2);
        progress.wait_for(|n| *n >= 30).await.expect("stream runs");
        c.start(2).await;
        let committed = stream.await.expect("stream task");
        assert_eq!(committed.len(), 60, "every put committed");
        let rows = c.converged(60).await;
        assert_eq!(rows[0].version, Some(60));
        for i in committed {
            assert_eq!(
                c.get(2, &format!("s{i}")).await,
                Some(format!("v{i}")),
                "slave 2 lost s{i}"
            );
        }
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_master_killed_mid_stream_loses_no_committed_update() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        for id in 0..=2 {
            c.start(id).await;
        }
        let (tx, mut progress) = tokio::sync::watch::channel(0);
        let stream = stream_puts(format!("127.0.0.1:{}", c.ports[0]), 60, tx);
        progress.wait_for(|n| *n >= 20).await.expect("stream runs");
        c.kill(0);
        c.start(0).await;
        let committed = stream.await.expect("stream task");
        assert_eq!(committed.len(), 60, "every put was answered committed");
        let master_version = c.status().await[0].version.expect("master up");
        c.converged(master_version).await;
        for i in committed {
            for node in 0..=2 {
                assert_eq!(
                    c.get(node, &format!("s{i}")).await,
                    Some(format!("v{i}")),
                    "node {node} lost committed s{i}"
                );
            }
        }
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_master_killed_between_prepare_and_commit_restarts_and_every_slave_learns_the_abort() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // Three slaves, the third down: slaves 1 and 2 prepare while the master waits for
        // slave 3's vote, so the master can be killed between prepare and decision.
        let mut c = Cluster::new(3);
        for id in 0..=2 {
            c.start(id).await;
        }
        let base = committed_version(&c.ok(&["put", "base", "1"]).await);
        let pending = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(&c.config)
            .args([
                "put",
                "pending",
                "x",
                "--two-phase",
                "--timeout",
                "30000",
                "--client-id",
                "4242",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn put");
        loop {
            let rows = c.status().await;
            if rows.len() == 4
                && rows[1].prepared == Some(base + 1)
                && rows[2].prepared == Some(base + 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.kill(0);
        c.start(0).await;
        c.start(3).await;
        let rows = c.converged(base).await;
        assert_eq!(
            rows[0].version,
            Some(base),
            "the undecided update was not committed"
        );
        for node in 0..=3 {
            assert_eq!(
                c.get(node, "pending").await,
                None,
                "node {node} shows an aborted update"
            );
            assert_eq!(c.get(node, "base").await.as_deref(), Some("1"));
        }
        // The waiting client re-sends after the restart and learns the decision.
        let out = pending.wait_with_output().await.expect("put finishes");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("master restarted"), "{stderr}");
        // The aborted version is never used again.
        let next = committed_version(&c.ok(&["put", "after", "2"]).await);
        assert_eq!(next, base + 2);
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_slave_down_makes_a_two_phase_update_abort_at_its_timeout() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        c.start(0).await;
        c.start(1).await;
        let out = c
            .cli(&["put", "k", "v", "--two-phase", "--timeout", "1000"])
            .await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("before the timeout"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

        // The same situation, rolled back by its client before the timeout (claim 5).
        let pending = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(&c.config)
            .args([
                "put",
                "r",
                "v",
                "--two-phase",
                "--timeout",
                "30000",
                "--client-id",
                "99",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn put");
        while c.status().await.first().and_then(|r| r.prepared).is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rolled = c.ok(&["rollback", "--client-id", "99", "--req", "0"]).await;
        assert!(rolled.contains("rolled back"), "{rolled}");
        let out = pending.wait_with_output().await.expect("put finishes");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("rolled back"));

        c.start(2).await;
        c.converged(0).await;
        for node in 0..=2 {
            assert_eq!(c.get(node, "k").await, None);
            assert_eq!(c.get(node, "r").await, None);
        }
        // With every slave up, the same update commits.
        c.ok(&["put", "k", "v", "--two-phase", "--timeout", "5000"])
            .await;
        assert_eq!(c.get(0, "k").await.as_deref(), Some("v"));
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_peer_with_the_wrong_cluster_key_is_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        c.start(0).await;
        c.start(1).await;
        // A slave with the wrong key: the master refuses it, and it says so and exits.
        let data = c.dir.path().join("data2");
        let data = data.to_str().expect("utf-8 temp path");
        let out = c
            .cli(&[
                "--key",
                "not-the-key-0123456789",
                "slave",
                "--id",
                "2",
                "--data-dir",
                data,
            ])
            .await;
        assert!(!out.status.success(), "a refused slave exits non-zero");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refused this node"), "{stderr}");
        let master_log = c.dir.path().join("node0-1.log");
        wait_for_line(&master_log, "peer node 2 failed to prove the cluster key").await;
        c.ok(&["put", "k", "v"]).await;
        let out = c
            .cli(&["--key", "not-the-key-0123456789", "get", "k"])
            .await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("wrong key"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            c.logs(0).contains("refused peer"),
            "the master logs the refusal"
        );
        assert_eq!(c.get(0, "k").await.as_deref(), Some("v"));
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn garbage_bytes_close_the_connection_and_the_node_keeps_serving() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        c.start(1).await;
        c.ok(&["put", "k", "v"]).await;
        let master = format!("127.0.0.1:{}", c.ports[0]);

        // Before the handshake: garbage instead of a hello.
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &[0u8, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9][..],
            &[0xff; 64][..],
        ] {
            let mut s = tokio::net::TcpStream::connect(&master)
                .await
                .expect("connect");
            tokio::io::AsyncWriteExt::write_all(&mut s, junk)
                .await
                .expect("write");
            let mut buf = [0u8; 64];
            // The node closes: EOF (or a reset).
            let n = s.read(&mut buf).await.unwrap_or(0);
            assert_eq!(n, 0, "the node answered garbage");
        }

        // After a valid handshake: a frame that does not decode.
        let me = replicore_runtime::runtime::handshake::Identity::new(CLUSTER, 1 << 40, KEY);
        let (mut io, _) = replicore_runtime::runtime::transport::connect(&master, &me)
            .await
            .expect("handshake");
        io.send(bytes::Bytes::from_static(&[0xff; 16]))
            .await
            .expect("send junk frame");
        let next = futures::StreamExt::next(&mut io).await;
        assert!(
            matches!(next, None | Some(Err(_))),
            "connection closed, got {next:?}"
        );
        wait_for_line(&c.dir.path().join("node0-1.log"), "frame does not decode").await;

        assert_eq!(c.get(0, "k").await.as_deref(), Some("v"));
        let v = committed_version(&c.ok(&["put", "k2", "v2"]).await);
        c.converged(v).await;
        assert_eq!(c.get(1, "k2").await.as_deref(), Some("v2"));
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn the_demo_converges_every_node() {
    let out = tokio::time::timeout(
        TEST_TIMEOUT,
        tokio::process::Command::new(BIN)
            .args(["demo", "--updates", "5"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("demo bounded")
    .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("converged: every node at version 9"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("identical to the master").count(),
        2,
        "{stdout}"
    );
}

#[tokio::test]
async fn bad_arguments_and_a_busy_port_give_one_line_and_a_non_zero_exit() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        let busy_dir = c.dir.path().join("busy").display().to_string();
        let master_addr = format!("127.0.0.1:{}", c.ports[0]);
        let busy: &[&str] = &[
            "slave",
            "--id",
            "1",
            "--listen",
            &master_addr,
            "--data-dir",
            &busy_dir,
        ];
        let cases: [&[&str]; 6] = [
            &["put"],                                   // missing arguments
            &["frobnicate"],                            // unknown command
            busy,                                       // the port is taken
            &["master", "--data-dir", &busy_dir],       // a master already runs
            &["--master", "127.0.0.1:1", "get", "k"],   // nothing listens there
            &["put", "k", "v", "--round-timeout", "5"], // --round-timeout without --two-phase
        ];
        for args in cases {
            let out = c.cli(args).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} succeeded");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        }
        let busy = c.cli(busy).await;
        assert!(String::from_utf8_lossy(&busy.stderr).contains("Address already in use"));
        let twin = c.cli(&["master", "--data-dir", &busy_dir]).await;
        assert!(String::from_utf8_lossy(&twin.stderr).contains("already runs"));
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn sigterm_stops_a_node_gracefully() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        c.ok(&["put", "k", "v"]).await;
        let mut child = c.children.remove(&0).expect("master running");
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(term.success());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .expect("master exits");
        assert!(status.success(), "{status:?}");
        assert!(
            c.logs(0).contains("node stopped"),
            "the node finished its shutdown"
        );
        // It restarts from its directory with the committed data.
        c.start(0).await;
        assert_eq!(c.get(0, "k").await.as_deref(), Some("v"));
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn traced_nodes_with_faults_from_the_cluster_file_pass_check_trace() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        // Every node injects faults into the frames it sends, as the cluster file says.
        let mut config = std::fs::read_to_string(&c.config).expect("config");
        config.push_str("\n[faults]\nseed = 9\nloss = 0.1\nduplicate = 0.1\nreorder = 0.1\n");
        std::fs::write(&c.config, config).expect("config");
        let trace = c.dir.path().join("trace");
        let trace_flag = trace.to_str().expect("utf-8 path").to_string();
        for id in 0..=2 {
            c.start_with(id, &["--trace-dir", &trace_flag]).await;
        }
        let (tx, mut progress) = tokio::sync::watch::channel(0);
        let stream = stream_puts(format!("127.0.0.1:{}", c.ports[0]), 40, tx);
        progress.wait_for(|n| *n >= 15).await.expect("stream runs");
        c.kill(1);
        c.start_with(1, &["--trace-dir", &trace_flag]).await;
        assert_eq!(stream.await.expect("stream task").len(), 40);
        // Under 10 % loss a lost Prepare aborts a two-phase update at its timeout: either
        // outcome is a run to replay.
        let _ = c
            .cli(&["put", "sync", "yes", "--two-phase", "--timeout", "2000"])
            .await;
        c.converged(40).await;
        for id in 0..=2 {
            let mut child = c.children.remove(&id).expect("running");
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill runs");
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .expect("node exits");
        }
        let out = c.ok(&["check-trace", &trace_flag]).await;
        assert!(out.starts_with("conforms: "), "{out}");
        assert!(out.contains("1 restarts"), "{out}");
        // With --json: one object, its counts beside the sentence.
        let out = c.ok(&["--json", "check-trace", &trace_flag]).await;
        let o: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        assert_eq!(
            (&o["outcome"], &o["conforms"]),
            (&"ok".into(), &true.into()),
            "{o}"
        );
        assert_eq!(o["restarts"], 1, "{o}");
        assert!(o["steps"].as_u64().is_some_and(|n| n > 40), "{o}");
        assert!(
            o["report"]
                .as_str()
                .is_some_and(|r| r.starts_with("conforms: ")),
            "{o}"
        );
        // A missing directory is a one-line error.
        let out = c.cli(&["check-trace", "/nonexistent/trace"]).await;
        assert!(!out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn the_demo_tells_its_story_as_json_objects() {
    let out = tokio::time::timeout(
        TEST_TIMEOUT,
        tokio::process::Command::new(BIN)
            .args(["--json", "demo", "--updates", "2"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("demo bounded")
    .expect("demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(events.iter().all(|e| e["command"] == "demo"));
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == kind).collect()
    };
    assert_eq!(of("listening").len(), 3);
    // Two one-phase puts, three two-phase puts, a delete: versions 1 to 6.
    let committed: Vec<u64> = of("committed")
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert_eq!(committed, [1, 2, 3, 4, 5, 6]);
    let nodes = of("node");
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["version"] == 6));
    assert_eq!(nodes.iter().filter(|n| n["identical"] == true).count(), 2);
    assert_eq!(of("converged")[0]["version"], 6);
}
