//! Real `replicore` processes on 127.0.0.1: the metrics endpoint moves while updates run,
//! `/health` follows readiness, and an oversize update is refused before it is sent.
//!
//! Every test runs under a `tokio::time::timeout`; waits poll a real outcome (a log line, an
//! endpoint's answer) with a deadline, never a bare sleep, and nothing asserts on speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_replicore");
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    // Bind port 0 and release it: the OS hands out a free port, which the node binds next.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A master and its slaves as child processes, killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    children: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    fn new(slaves: usize, extra: &str) -> Self {
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
                "cluster_id = 9\nkey = \"observability-test-key\"\nmaster = \"127.0.0.1:{}\"\nslaves = [{}]\nheartbeat_ms = 50\n{extra}",
                ports[0],
                slave_list.join(", ")
            ),
        )
        .expect("write config");
        Cluster {
            dir,
            config,
            children: Vec::new(),
        }
    }

    fn log(&self, node: u64) -> PathBuf {
        self.dir.path().join(format!("node{node}.log"))
    }

    /// Starts node `id` (0 = master) with its metrics endpoint on a port of its choice;
    /// returns that endpoint's address once the node listens.
    async fn start(&mut self, id: u64) -> String {
        let log = self.log(id);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let data = self.dir.path().join(format!("data{id}"));
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(["--init", "--metrics-listen", "127.0.0.1:0"]);
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
        self.children.push(child);
        metrics_addr(&log).await
    }

    fn kill(&mut self, index: usize) {
        let c = &mut self.children[index];
        c.kill().expect("kill -9");
        c.wait().expect("reap");
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

    async fn put(&self, args: &[&str]) {
        let out = self.cli(&[&["put"], args].concat()).await;
        assert!(
            out.status.success(),
            "put {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Waits for a line containing `needle` in the file at `path` and returns it.
async fn wait_for_line(path: &Path, needle: &str) -> String {
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(line) = text.lines().find(|l| l.contains(needle))
        {
            return line.to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The metrics endpoint's address a process printed in its log at `path`
/// ("… metrics on http://ADDR/metrics").
async fn metrics_addr(path: &Path) -> String {
    let line = wait_for_line(path, "metrics on http://").await;
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("metrics address")
        .to_string()
}

/// `GET path` on `addr`: the status code and the body.
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    s.read_to_string(&mut response)
        .await
        .expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `/health` on `addr` until it answers `want`.
async fn wait_for_health(addr: &str, want: u16) {
    while http_get(addr, "/health").await.0 != want {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of the samples of `name` (all label sets) in a Prometheus text page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_metrics_move_with_updates_and_health_follows_readiness() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::new(1, "");
        let master = cluster.start(0).await;
        wait_for_health(&master, 200).await;
        let slave = cluster.start(1).await;
        // The slave serves once it is connected to the master.
        wait_for_health(&slave, 200).await;

        cluster.put(&["a", "1"]).await;
        cluster.put(&["b", "2", "--two-phase"]).await;
        let (status, first) = http_get(&master, "/metrics").await;
        assert_eq!(status, 200);
        for _ in 0..3 {
            cluster.put(&["c", "3"]).await;
            cluster.put(&["d", "4", "--two-phase"]).await;
        }
        let (_, second) = http_get(&master, "/metrics").await;
        let moved = |name: &str| {
            let (a, b) = (sample(&first, name), sample(&second, name));
            assert!(b > a, "{name} did not move: {a} then {b}\n{second}");
        };
        moved("replicore_commits_total");
        moved("replicore_commit_latency_seconds_count");
        moved("replicore_save_seconds_count");
        moved("replicore_group_commit_inputs_count");
        moved("replicore_round_requests_count");
        moved("replicore_durable_version");
        assert!(
            sample(&second, "replicore_commits_total") >= 8.0,
            "{second}"
        );
        // Lag appears once the slave has told the master its version (its heartbeat ack).
        let mut page = second.clone();
        while !page.contains("replicore_slave_lag_versions{") {
            tokio::time::sleep(Duration::from_millis(50)).await;
            page = http_get(&master, "/metrics").await.1;
        }
        for gauge in [
            "replicore_inbox_inputs",
            "replicore_round_queue_requests",
            "replicore_slave_lag_versions",
            "replicore_slave_lag_seconds",
        ] {
            assert!(
                page.lines().any(|l| l.starts_with(gauge)),
                "no {gauge}:\n{page}"
            );
        }
        // The slave's own durable writes are counted on its endpoint.
        let (_, on_slave) = http_get(&slave, "/metrics").await;
        assert!(
            sample(&on_slave, "replicore_save_seconds_count") > 0.0,
            "{on_slave}"
        );

        // One INFO line per protocol event: each commit is logged on the master.
        let log = std::fs::read_to_string(cluster.log(0)).expect("master log");
        assert!(
            log.lines().filter(|l| l.contains("committed")).count() >= 8,
            "{log}"
        );
        // Client connections are not logged at INFO.
        assert!(!log.contains("client connected"), "{log}");

        // A slave without its master does not serve.
        cluster.kill(0);
        wait_for_health(&slave, 503).await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_oversize_update_is_refused_before_sending_and_the_master_log_stays_quiet() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::new(1, "max_frame_bytes = 65536\n");
        let master = cluster.start(0).await;
        wait_for_health(&master, 200).await;
        let value = "x".repeat(100 * 1024);
        let out = cluster.cli(&["put", "big", &value]).await;
        assert!(!out.status.success(), "an oversize put must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("refused before sending") && stderr.contains("65536"),
            "{stderr}"
        );
        assert!(!stderr.contains("unknown"), "{stderr}");
        // A value under the limit still commits.
        cluster.put(&["small", "1"]).await;
        let log = std::fs::read_to_string(cluster.log(0)).expect("master log");
        assert!(!log.contains("bad frame"), "{log}");
        assert!(!log.contains("WARN"), "{log}");
        assert!(log.lines().count() < 50, "{log}");
    })
    .await
    .expect("bounded");
}

/// A knowledge replica serving syncs (`replica-serve --metrics-listen`) counts and logs what
/// its steps did: the bundle it sent to a pulling peer, the sync it pulled back (two-way),
/// the change it applied.
#[tokio::test]
async fn a_knowledge_replica_logs_its_syncs_and_its_metrics_move() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(0, "");
        let peer = format!("127.0.0.1:{}", free_port());
        let log = c.dir.path().join("replica1.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&c.config)
            .args(["--init", "--metrics-listen", "127.0.0.1:0"])
            .args(["knowledge-sync", "replica-serve", "--data-dir"])
            .arg(c.dir.path().join("r1"))
            .args(["--replica", "1", "--listen", &peer])
            .stdout(out)
            .stderr(err)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawn replicore");
        c.children.push(child);
        let addr = metrics_addr(&log).await;
        wait_for_health(&addr, 200).await;
        let (_, page) = http_get(&addr, "/metrics").await;
        assert_eq!(sample(&page, "replicore_knowledge_bundles_sent_total"), 0.0);

        let r2 = c.dir.path().join("r2");
        let r2 = r2.to_str().expect("utf-8");
        let base = ["knowledge-sync"];
        let put = c
            .cli(
                &[
                    &["--init"],
                    &base[..],
                    &["replica-put", "--data-dir", r2, "--replica", "2", "k", "v"],
                ]
                .concat(),
            )
            .await;
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
        let sync = c
            .cli(
                &[
                    &base[..],
                    &[
                        "sync",
                        "--data-dir",
                        r2,
                        "--replica",
                        "2",
                        "--peer",
                        &peer,
                        "--two-way",
                    ],
                ]
                .concat(),
            )
            .await;
        assert!(
            sync.status.success(),
            "{}",
            String::from_utf8_lossy(&sync.stderr)
        );

        // Replica 1 answered replica 2's pull with a bundle, pulled back and applied `k`.
        loop {
            let (_, page) = http_get(&addr, "/metrics").await;
            if sample(&page, "replicore_knowledge_bundles_sent_total") >= 1.0
                && sample(&page, "replicore_knowledge_changes_received_total") >= 1.0
                && sample(&page, "replicore_knowledge_syncs_total") >= 2.0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sent = wait_for_line(&log, "bundle sent").await;
        assert!(
            sent.contains("destination=2") || sent.contains("destination=\"2\""),
            "{sent}"
        );
        wait_for_line(&log, "sync started").await;
        wait_for_line(&log, "sync completed").await;
        // The peer ended its finished sync cleanly: served, not failed.
        wait_for_line(&log, "sync served").await;
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(!text.contains("sync failed"), "{text}");
    })
    .await
    .expect("test bounded");
}

/// Starts failover server `id` of the cluster file `config` with its metrics endpoint, logging
/// to `log`; returns the endpoint's address once the server listens.
async fn start_failover(config: &Path, dir: &Path, id: u64, log: &Path) -> (Child, String) {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["--init", "--metrics-listen", "127.0.0.1:0"])
        .args(["failover", "serve", "--id", &id.to_string(), "--data-dir"])
        .arg(dir.join(format!("fo{id}")))
        .stdout(out)
        .stderr(err)
        .env("RUST_LOG", "info")
        .spawn()
        .expect("spawn replicore");
    let addr = metrics_addr(log).await;
    wait_for_line(log, "listening on").await;
    (child, addr)
}

/// A failover cluster's servers count and log what their steps did: the master the update it
/// approved, the backup its takeover once the master is killed.
#[tokio::test]
async fn failover_servers_log_approvals_and_the_takeover_and_their_metrics_move() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1, "");
        let (config, dir) = (c.config.clone(), c.dir.path().to_path_buf());
        let (logs, mut addrs) = ([dir.join("fo0.log"), dir.join("fo1.log")], Vec::new());
        for id in 0..2 {
            let (child, addr) = start_failover(&config, &dir, id, &logs[id as usize]).await;
            c.children.push(child);
            addrs.push(addr);
        }
        let put = c.cli(&["failover", "put", "k", "v"]).await;
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
        let (_, page) = http_get(&addrs[0], "/metrics").await;
        assert!(
            sample(&page, "replicore_failover_updates_total") >= 1.0,
            "{page}"
        );
        assert!(sample(&page, "replicore_failover_version") >= 1.0, "{page}");
        let approved = wait_for_line(&logs[0], "update approved").await;
        assert!(approved.contains("version=1"), "{approved}");

        // The master dies; the backup's lease check finds it gone and takes over.
        c.kill(0);
        wait_for_line(&logs[1], "took over").await;
        loop {
            let (_, page) = http_get(&addrs[1], "/metrics").await;
            if sample(&page, "replicore_failover_role_changes_total") >= 1.0
                && sample(&page, "replicore_failover_epoch") >= 1.0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("test bounded");
}

/// Stage-sync peers count and log what their steps did: the edit a peer executed, and the
/// stage the other reached by executing it too.
#[tokio::test]
async fn stage_sync_peers_log_their_edits_and_their_metrics_move() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(0, "");
        let peers: Vec<String> = (0..2)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let (mut addrs, mut logs) = (Vec::new(), Vec::new());
        for id in 0..2 {
            let log = c.dir.path().join(format!("peer{id}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let mut cmd = Command::new(BIN);
            cmd.arg("--config")
                .arg(&c.config)
                .args(["--init", "--metrics-listen", "127.0.0.1:0"])
                .args(["stage-sync", "peer", "--id", &id.to_string()]);
            for p in &peers {
                cmd.args(["--peer", p]);
            }
            let child = cmd
                .arg("--data-dir")
                .arg(c.dir.path().join(format!("p{id}")))
                .stdout(out)
                .stderr(err)
                .env("RUST_LOG", "info")
                .spawn()
                .expect("spawn peer");
            c.children.push(child);
            addrs.push(metrics_addr(&log).await);
            logs.push(log);
        }
        let (_, page) = http_get(&addrs[1], "/metrics").await;
        assert_eq!(sample(&page, "replicore_stage_edits_total"), 0.0);
        // The peer may not listen yet: retry until the insert is sent.
        loop {
            let out = c
                .cli(&["stage-sync", "insert", "--connect", &peers[0], "0", "hello"])
                .await;
            if out.status.success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let executed = wait_for_line(&logs[0], "edit executed").await;
        assert!(executed.contains("stage=1"), "{executed}");
        let (_, page) = http_get(&addrs[0], "/metrics").await;
        assert_eq!(sample(&page, "replicore_stage_edits_total"), 1.0, "{page}");
        // Peer 1 executes peer 0's operation at stage 1 too.
        loop {
            let (_, page) = http_get(&addrs[1], "/metrics").await;
            if sample(&page, "replicore_stage_stage") >= 1.0 {
                assert_eq!(sample(&page, "replicore_stage_edits_total"), 0.0, "{page}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("test bounded");
}
