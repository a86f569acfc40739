//! The CLI contract of docs/cli.md, on real `replicore` processes on 127.0.0.1: each exit
//! code, the `--json` objects, values from a file or stdin byte for byte, the cluster key
//! from a file or the environment, and the refusals of a weak key.
//!
//! Every test runs under a `tokio::time::timeout`, and every command under its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_replicore");
const KEY: &str = "cli-contract-key-0123456789";
const CLUSTER: u64 = 21;
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The exit codes docs/cli.md documents.
mod code {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const ABORTED: i32 = 3;
    pub const UNKNOWN: i32 = 4;
    pub const NOT_SENT: i32 = 5;
    pub const NOT_FOUND: i32 = 6;
    pub const DEGRADED: i32 = 7;
}

fn free_port() -> u16 {
    // Bind port 0 and release it: the OS hands out a free port, which the node binds next.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// What a command did.
struct Out {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The JSON objects on stdout, one per line.
    fn json(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    fn one(&self) -> serde_json::Value {
        let mut all = self.json();
        assert_eq!(all.len(), 1, "one object: {}", self.text());
        all.remove(0)
    }
}

/// A master and `slaves` slaves; the cluster file holds no key, so every command gives it
/// through a key file (the way docs/cli.md shows).
struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    key_file: PathBuf,
    children: BTreeMap<u64, Child>,
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
                "cluster_id = {CLUSTER}\nmaster = \"127.0.0.1:{}\"\nslaves = [{}]\nheartbeat_ms = 50\n",
                ports[0],
                slave_list.join(", ")
            ),
        )
        .expect("write config");
        let key_file = dir.path().join("cluster.key");
        // With the newline `echo` writes, which is not part of the key.
        std::fs::write(&key_file, format!("{KEY}\n")).expect("write key");
        Cluster {
            dir,
            config,
            key_file,
            children: BTreeMap::new(),
        }
    }

    /// Starts node `id` (0 = master) and waits until it listens.
    async fn start(&mut self, id: u64) {
        let log = self.dir.path().join(format!("node{id}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let data = self.dir.path().join(format!("data{id}"));
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--key-file")
            .arg(&self.key_file)
            .arg("--init");
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on")) {
            assert!(Instant::now() < deadline, "node {id} did not start");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    /// Runs `replicore --config .. --key-file .. ARGS` (no --key-file when ARGS give one).
    async fn cli(&self, args: &[&str]) -> Out {
        let key_file = self.key_file.clone();
        let given = args.contains(&"--key-file");
        self.cli_with(
            args,
            |cmd| {
                if !given {
                    cmd.arg("--key-file").arg(key_file);
                }
            },
            None,
        )
        .await
    }

    /// Runs `replicore --config .. ARGS` with no key: `edit` gives one some other way.
    async fn cli_with(
        &self,
        args: &[&str],
        edit: impl FnOnce(&mut tokio::process::Command),
        stdin: Option<&[u8]>,
    ) -> Out {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--config").arg(&self.config);
        cmd.env_remove("REPLICORE_KEY");
        edit(&mut cmd);
        cmd.args(args)
            .env("RUST_LOG", "off")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("replicore runs");
        if let Some(bytes) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(bytes).await.expect("write stdin");
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("replicore {args:?} did not exit within 60 s"))
            .expect("replicore runs");
        let out = Out {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
        out
    }

    /// Runs a command that must exit `code`, printing a one-line error when it fails.
    /// The master's address, as the cluster file gives it.
    fn master_addr(&self) -> String {
        let config = std::fs::read_to_string(&self.config).expect("config");
        config
            .lines()
            .find_map(|l| l.strip_prefix("master = "))
            .expect("master address")
            .trim_matches('"')
            .to_string()
    }

    async fn expect(&self, code: i32, args: &[&str]) -> Out {
        let out = self.cli(args).await;
        assert_eq!(
            out.code,
            Some(code),
            "replicore {args:?}: stdout {:?} stderr {:?}",
            out.text(),
            out.stderr
        );
        if code != 0 {
            assert_eq!(
                out.stderr.trim_end().lines().count(),
                1,
                "one line: {}",
                out.stderr
            );
        }
        out
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

#[tokio::test]
async fn each_outcome_of_an_update_or_a_read_has_its_exit_code_and_json_object() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        c.start(1).await;

        // Committed: 0, with the version, the client id and the request number.
        let put = c
            .expect(code::OK, &["--json", "put", "k", "v", "--client-id", "77"])
            .await
            .one();
        assert_eq!(put["outcome"], "committed");
        assert_eq!(put["client_id"], 77);
        assert_eq!(put["req"], 0);
        let version = put["version"].as_u64().expect("version");

        // A read prints the version it read at.
        let get = c.expect(code::OK, &["--json", "get", "k"]).await.one();
        assert_eq!(get["found"], true);
        assert_eq!(get["value"], "v");
        assert_eq!(get["value_base64"], "dg==");
        assert_eq!(get["version"].as_u64(), Some(version));
        let plain = c.expect(code::OK, &["get", "k"]).await;
        assert_eq!(plain.text(), "v\n");
        assert!(
            plain.stderr.contains(&format!("version {version}")),
            "{}",
            plain.stderr
        );

        // Not found: 6, the object says so.
        let missing = c
            .expect(code::NOT_FOUND, &["--json", "get", "absent"])
            .await;
        assert_eq!(missing.one()["found"], false);
        c.expect(code::NOT_FOUND, &["get", "absent", "--node", "1"])
            .await;

        // Status: one object per node, the lag signed.
        let status = c.expect(code::OK, &["--json", "status"]).await.json();
        assert_eq!(status.len(), 2);
        assert_eq!(status[0]["role"], "master");
        assert!(status.iter().all(|s| s["reachable"] == true));
        assert!(status.iter().all(|s| s["lag"].is_i64()));

        // A dump lists every key with the version it was read at.
        c.expect(code::OK, &["put", "k2", "v2"]).await;
        let dump = c.expect(code::OK, &["--json", "dump"]).await.json();
        let keys: Vec<&str> = dump.iter().filter_map(|o| o["key"].as_str()).collect();
        assert_eq!(keys, ["k", "k2"]);
        assert!(
            dump.iter()
                .all(|o| o["version"].as_u64() == Some(version + 1))
        );

        // Usage: 2, and a missing argument is named.
        let usage = c.expect(code::USAGE, &["put"]).await;
        assert!(usage.stderr.contains("<KEY>"), "{}", usage.stderr);
        let usage = c.expect(code::USAGE, &["put", "", "v"]).await;
        assert!(usage.stderr.contains("key is empty"), "{}", usage.stderr);
        c.expect(
            code::USAGE,
            &[
                "put",
                "k",
                "v",
                "--two-phase",
                "--timeout",
                "100",
                "--round-timeout",
                "200",
            ],
        )
        .await;

        // Unreachable: 5, and the update was not sent.
        let down = c
            .expect(
                code::NOT_SENT,
                &["--json", "--master", "127.0.0.1:1", "put", "k", "x"],
            )
            .await;
        assert_eq!(down.one()["outcome"], "not_sent");

        // A rollback of a request the master never received: 6 at once, not after a wait.
        let started = Instant::now();
        let never = c
            .expect(
                code::NOT_FOUND,
                &["rollback", "--client-id", "77", "--req", "5"],
            )
            .await;
        assert!(never.stderr.contains("never received"), "{}", never.stderr);
        assert!(started.elapsed() < Duration::from_secs(5));

        // A slave down: a two-phase update aborts at the master's round timeout (3).
        c.kill(1);
        let aborted = c
            .expect(
                code::ABORTED,
                &[
                    "--json",
                    "put",
                    "k",
                    "y",
                    "--two-phase",
                    "--timeout",
                    "3000",
                ],
            )
            .await;
        assert_eq!(aborted.one()["outcome"], "aborted");

        // And status says the cluster is degraded (7), naming the node down.
        let status = c.expect(code::DEGRADED, &["status"]).await;
        assert!(status.stderr.contains("slave 1"), "{}", status.stderr);

        // Unknown (4): a round holds the master, and this update waits behind it longer
        // than its --timeout, which bounds the whole wait.
        let mut holder = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(&c.config)
            .arg("--key-file")
            .arg(&c.key_file)
            .args([
                "put",
                "held",
                "x",
                "--two-phase",
                "--timeout",
                "60000",
                "--round-timeout",
                "30000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn put");
        loop {
            let s = c.cli(&["--json", "status"]).await.json();
            if s.first().is_some_and(|m| !m["prepared"].is_null()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let unknown = c
            .expect(
                code::UNKNOWN,
                &[
                    "--json",
                    "put",
                    "q",
                    "z",
                    "--two-phase",
                    "--timeout",
                    "1500",
                ],
            )
            .await;
        let waited = started.elapsed();
        assert_eq!(unknown.one()["outcome"], "unknown");
        assert!(
            waited < Duration::from_millis(1500 + 1500),
            "--timeout bounds the wait: {waited:?}"
        );
        let _ = holder.kill().await;
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn values_come_from_a_file_or_stdin_byte_for_byte() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        c.start(1).await;
        // Every byte value, a NUL and invalid UTF-8 among them.
        let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe, b'\n']).collect();
        let file = c.dir.path().join("value.bin");
        std::fs::write(&file, &binary).expect("write value");
        let file = file.to_str().expect("utf-8 path");
        c.expect(code::OK, &["put", "bin", "--value-file", file])
            .await;
        for node in ["0", "1"] {
            // The slave has it once the cluster converged.
            let deadline = Instant::now() + Duration::from_secs(20);
            let raw = loop {
                let out = c.cli(&["get", "bin", "--raw", "--node", node]).await;
                if out.code == Some(code::OK) {
                    break out;
                }
                assert!(Instant::now() < deadline, "node {node} never had the value");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(raw.stdout, binary, "node {node} returns the bytes exactly");
        }
        let json = c.expect(code::OK, &["--json", "get", "bin"]).await.one();
        assert!(json["value"].is_null(), "not UTF-8: no text field");
        assert!(json["value_base64"].is_string());

        // Stdin, with `--value-file -`.
        let out = c
            .cli_with(
                &["put", "piped", "--value-file", "-"],
                |cmd| {
                    cmd.env("REPLICORE_KEY", KEY);
                },
                Some(&binary[..100]),
            )
            .await;
        assert_eq!(out.code, Some(code::OK), "{}", out.stderr);
        let raw = c.expect(code::OK, &["get", "piped", "--raw"]).await;
        assert_eq!(raw.stdout, &binary[..100]);

        // A value and a value file exclude each other.
        c.expect(code::USAGE, &["put", "k", "v", "--value-file", file])
            .await;
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn the_key_comes_from_a_file_or_the_environment_and_a_weak_one_is_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        // From the environment.
        let out = c
            .cli_with(
                &["put", "k", "v"],
                |cmd| {
                    cmd.env("REPLICORE_KEY", KEY);
                },
                None,
            )
            .await;
        assert_eq!(out.code, Some(code::OK), "{}", out.stderr);
        // From the key file (the harness's default), newline dropped.
        c.expect(code::OK, &["get", "k"]).await;
        // A wrong key: refused by the master, nothing sent (5).
        let out = c
            .cli_with(
                &["get", "k"],
                |cmd| {
                    cmd.env("REPLICORE_KEY", "a-wrong-but-long-key-0123");
                },
                None,
            )
            .await;
        assert_eq!(out.code, Some(code::NOT_SENT), "{}", out.stderr);
        assert!(out.stderr.contains("wrong key"), "{}", out.stderr);

        // Empty and weak keys are refused before anything connects, in one line (2).
        let empty = c.dir.path().join("empty.key");
        std::fs::write(&empty, "\n").expect("write");
        let weak = c.dir.path().join("weak.key");
        std::fs::write(&weak, "short").expect("write");
        for (file, says) in [(&empty, "is empty"), (&weak, "too weak")] {
            let out = c
                .cli(&["--key-file", file.to_str().expect("utf-8"), "get", "k"])
                .await;
            assert_eq!(out.code, Some(code::USAGE), "{}", out.stderr);
            assert!(out.stderr.contains(says), "{}", out.stderr);
            assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
        }
        for (key, says) in [("", "is empty"), ("short", "too weak")] {
            let out = c
                .cli_with(
                    &["status"],
                    |cmd| {
                        cmd.env("REPLICORE_KEY", key);
                    },
                    None,
                )
                .await;
            assert_eq!(out.code, Some(code::USAGE), "{}", out.stderr);
            assert!(out.stderr.contains(says), "{}", out.stderr);
        }
        // A node refuses a weak key too, before it opens its store.
        let out = c
            .cli(&[
                "--key-file",
                weak.to_str().expect("utf-8"),
                "--init",
                "slave",
                "--id",
                "1",
                "--data-dir",
                c.dir.path().join("weak-slave").to_str().expect("utf-8"),
            ])
            .await;
        assert_eq!(out.code, Some(code::USAGE), "{}", out.stderr);
        assert!(!c.dir.path().join("weak-slave").exists());
        // A missing key file names the file.
        let out = c.cli(&["--key-file", "/nonexistent/key", "get", "k"]).await;
        assert_eq!(out.code, Some(code::FAILED), "{}", out.stderr);
        assert!(out.stderr.contains("/nonexistent/key"), "{}", out.stderr);
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_second_node_with_a_running_nodes_id_is_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        c.start(1).await;
        for (role, dir) in [
            (&["slave", "--id", "1"][..], "twin1"),
            (&["master"][..], "twin0"),
        ] {
            let data = c.dir.path().join(dir);
            let mut args = vec!["--init"];
            args.extend_from_slice(role);
            args.extend_from_slice(&["--listen", "127.0.0.1:0", "--data-dir"]);
            args.push(data.to_str().expect("utf-8"));
            let out = c.expect(code::FAILED, &args).await;
            assert!(out.stderr.contains("already runs"), "{}", out.stderr);
            assert!(!data.exists(), "a refused node creates nothing");
        }
        // The cluster serves on.
        c.expect(code::OK, &["put", "k", "v"]).await;
    })
    .await
    .expect("test bounded");
}

/// Starts `replicore --config .. --key-file .. --init ARGS` in the background, logging to
/// `log`, and waits for `ready` in its log.
async fn spawn_logged(c: &mut Cluster, slot: u64, args: &[&str], log: &Path, ready: &str) {
    let out = std::fs::File::create(log).expect("log");
    let err = out.try_clone().expect("log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&c.config)
        .arg("--key-file")
        .arg(&c.key_file)
        .arg("--init")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn");
    c.children.insert(slot, child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log).is_ok_and(|s| s.contains(ready)) {
        assert!(Instant::now() < deadline, "{args:?} did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_second_failover_server_or_stage_sync_peer_with_a_running_id_is_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        let data = c.dir.path().join("fdata1");
        let log = c.dir.path().join("failover1.log");
        let args = ["failover", "serve", "--id", "1", "--data-dir"];
        let data_arg = data.to_str().expect("utf-8");
        spawn_logged(
            &mut c,
            20,
            &[&args[..], &[data_arg]].concat(),
            &log,
            "listening on",
        )
        .await;
        let twin = c.dir.path().join("ftwin1");
        let out = c
            .expect(
                code::FAILED,
                &[
                    "--init",
                    "failover",
                    "serve",
                    "--id",
                    "1",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    twin.to_str().expect("utf-8"),
                ],
            )
            .await;
        assert!(
            out.stderr.contains("failover server 1 already runs"),
            "{}",
            out.stderr
        );
        assert!(!twin.exists(), "a refused server creates nothing");

        let peers: Vec<String> = (0..2)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peer_args = |dir: &str| -> Vec<String> {
            let mut a: Vec<String> = ["stage-sync", "peer", "--id", "0"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            for p in &peers {
                a.extend(["--peer".to_string(), p.clone()]);
            }
            a.extend(["--data-dir".to_string(), dir.to_string()]);
            a
        };
        let data = c.dir.path().join("sdata0");
        let first = peer_args(data.to_str().expect("utf-8"));
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let log = c.dir.path().join("peer0.log");
        spawn_logged(&mut c, 21, &first, &log, "stage-sync peer running").await;
        let twin = c.dir.path().join("stwin0");
        let second = peer_args(twin.to_str().expect("utf-8"));
        let mut second: Vec<&str> = second.iter().map(String::as_str).collect();
        second.insert(0, "--init");
        let out = c.expect(code::FAILED, &second).await;
        assert!(
            out.stderr.contains("stage-sync peer 0 already runs"),
            "{}",
            out.stderr
        );
        assert!(!twin.exists(), "a refused peer creates nothing");
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn failover_commands_share_the_exit_codes_json_and_value_files() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        for id in 0..2u64 {
            let log = c.dir.path().join(format!("failover{id}.log"));
            let data = c.dir.path().join(format!("fdata{id}"));
            let id_arg = id.to_string();
            let args = ["failover", "serve", "--id", &id_arg, "--data-dir"];
            let args = [&args[..], &[data.to_str().expect("utf-8")]].concat();
            spawn_logged(&mut c, 10 + id, &args, &log, "listening on").await;
        }
        let binary: Vec<u8> = (0..=255u8).rev().collect();
        let file = c.dir.path().join("f.bin");
        std::fs::write(&file, &binary).expect("write");
        let put = c
            .expect(
                code::OK,
                &[
                    "--json",
                    "failover",
                    "put",
                    "b",
                    "--value-file",
                    file.to_str().expect("utf-8"),
                ],
            )
            .await
            .one();
        assert_eq!(put["outcome"], "committed");
        let raw = c.expect(code::OK, &["failover", "get", "b", "--raw"]).await;
        assert_eq!(raw.stdout, binary);
        let get = c
            .expect(code::OK, &["--json", "failover", "get", "b"])
            .await
            .one();
        assert_eq!(get["version"], put["version"]);
        let absent = c
            .expect(code::NOT_FOUND, &["--json", "failover", "get", "nope"])
            .await;
        assert_eq!(absent.one()["found"], false);
        let status = c
            .expect(code::OK, &["--json", "failover", "status"])
            .await
            .json();
        assert_eq!(status.len(), 2);
        assert!(
            status
                .iter()
                .all(|s| s["reachable"] == true && s["epoch"].is_u64())
        );
        // The backup down: status is degraded (7) and names it.
        if let Some(mut b) = c.children.remove(&11) {
            b.kill().expect("kill");
            b.wait().expect("reap");
        }
        let out = c.expect(code::DEGRADED, &["failover", "status"]).await;
        assert!(out.stderr.contains("server 1"), "{}", out.stderr);
        // Both down: an update that reaches no server was never sent (5), not unknown (4),
        // and a read finds nothing to read (5).
        if let Some(mut m) = c.children.remove(&10) {
            m.kill().expect("kill");
            m.wait().expect("reap");
        }
        let out = c
            .expect(
                code::NOT_SENT,
                &["failover", "put", "k", "v", "--within-ms", "500"],
            )
            .await;
        assert!(out.stderr.contains("nothing was sent"), "{}", out.stderr);
        c.expect(
            code::NOT_SENT,
            &["failover", "get", "k", "--within-ms", "500"],
        )
        .await;
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn knowledge_and_stage_sync_commands_print_json_and_refuse_binary_text_values() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let c = Cluster::new(0);
        let replica = c.dir.path().join("r1");
        let replica = replica.to_str().expect("utf-8");
        let text = c.dir.path().join("text.txt");
        std::fs::write(&text, "hello\nworld").expect("write");
        let binary = c.dir.path().join("bin");
        std::fs::write(&binary, [0xff, 0xfe, 0]).expect("write");
        let base = [
            "--init",
            "knowledge-sync",
            "replica-put",
            "--data-dir",
            replica,
            "--replica",
            "1",
        ];
        let mut args = base.to_vec();
        args.extend_from_slice(&["--json", "k", "--value-file", text.to_str().expect("utf-8")]);
        let put = c.expect(code::OK, &args).await.one();
        assert_eq!(put["value"], "hello\nworld");
        // Replica 1's first change, named in the incarnation its store was created as.
        let change = put["change"].as_str().expect("a change id");
        assert!(
            change.starts_with("r1.") && change.ends_with("#1"),
            "{change}"
        );
        let mut args = base.to_vec();
        args.extend_from_slice(&["k2", "--value-file", binary.to_str().expect("utf-8")]);
        let refused = c.expect(code::USAGE, &args).await;
        assert!(refused.stderr.contains("not UTF-8"), "{}", refused.stderr);
        let show = c
            .expect(
                code::OK,
                &[
                    "--json",
                    "knowledge-sync",
                    "replica-show",
                    "--data-dir",
                    replica,
                    "--replica",
                    "1",
                ],
            )
            .await
            .json();
        assert_eq!(show[0]["key"], "k");
        assert_eq!(show.last().expect("knowledge")["kind"], "knowledge");
        // A sync with nobody listening: nothing exchanged (5).
        c.expect(
            code::NOT_SENT,
            &[
                "knowledge-sync",
                "sync",
                "--data-dir",
                replica,
                "--replica",
                "1",
                "--peer",
                "127.0.0.1:1",
            ],
        )
        .await;

        // Stage sync: a group of two peers, an insert from stdin, the document as JSON.
        let peers: Vec<String> = (0..2)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut children = Vec::new();
        for id in 0..2 {
            let mut cmd = Command::new(BIN);
            cmd.arg("--config")
                .arg(&c.config)
                .arg("--key-file")
                .arg(&c.key_file)
                .args(["--init", "stage-sync", "peer", "--id", &id.to_string()]);
            for p in &peers {
                cmd.args(["--peer", p]);
            }
            let child = cmd
                .arg("--data-dir")
                .arg(c.dir.path().join(format!("p{id}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn peer");
            children.push(child);
        }
        let peer = peers[0].clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let insert = loop {
            let out = c
                .cli_with(
                    &[
                        "--json",
                        "stage-sync",
                        "insert",
                        "--connect",
                        &peer,
                        "0",
                        "--value-file",
                        "-",
                    ],
                    |cmd| {
                        cmd.env("REPLICORE_KEY", KEY);
                    },
                    Some(b"from stdin"),
                )
                .await;
            if out.code == Some(code::OK) {
                break out;
            }
            assert_eq!(out.code, Some(code::NOT_SENT), "{}", out.stderr);
            assert!(Instant::now() < deadline, "the peer did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(insert.one()["outcome"], "executed");
        let show = c
            .expect(
                code::OK,
                &["--json", "stage-sync", "show", "--connect", &peer],
            )
            .await
            .json();
        assert_eq!(show[0]["kind"], "stages");
        assert_eq!(show[1]["value"], "from stdin");
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    })
    .await
    .expect("test bounded");
}

/// A client that dies after its handshake (its connection reset, not closed) is an ordinary
/// disconnect to the master: no warning names a bad frame or the reset, and the master
/// serves on.
#[tokio::test]
async fn a_connection_reset_after_the_handshake_is_no_warning() {
    use replicore_runtime::runtime::handshake::Identity;
    use replicore_runtime::runtime::tls::Stream;
    use replicore_runtime::runtime::transport;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        c.start(1).await;
        let master = c.master_addr();
        for i in 0..3 {
            let me = Identity::new(
                CLUSTER,
                transport::CLIENT_ID_MIN + 7 + i,
                KEY.as_bytes().to_vec(),
            );
            let (io, _) = transport::connect(&master, &me)
                .await
                .expect("the handshake succeeds");
            let tcp = match io.get_ref() {
                Stream::Plain(s) => s,
                Stream::Tls(s) => s.get_ref().0,
            };
            // A zero linger resets the connection at once: a client killed mid-session.
            #[allow(deprecated)]
            tcp.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(io);
        }
        // The master serves on, and its log has no warning of the resets.
        c.expect(code::OK, &["put", "after-reset", "v"]).await;
        let text = std::fs::read_to_string(c.dir.path().join("node0.log")).expect("log");
        assert!(!text.contains("reset by peer"), "{text}");
        assert!(!text.contains("bad frame"), "{text}");
        assert!(!text.contains("WARN"), "{text}");
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_peer_that_dies_mid_handshake_is_not_logged_as_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(1);
        c.start(0).await;
        let master = c.master_addr();
        for _ in 0..3 {
            let s = tokio::net::TcpStream::connect(&master)
                .await
                .expect("connect");
            // A zero linger resets the connection at once (it never blocks the drop): a
            // client process that died mid-handshake.
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(s);
        }
        // A real refusal after them is still a warning; once it is logged, so would they be.
        let out = c
            .cli_with(
                &["get", "k"],
                |cmd| {
                    cmd.env("REPLICORE_KEY", "a-wrong-but-long-key-0123");
                },
                None,
            )
            .await;
        assert_eq!(out.code, Some(code::NOT_SENT), "{}", out.stderr);
        let log = c.dir.path().join("node0.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log).is_ok_and(|s| s.contains("refused peer")) {
            assert!(Instant::now() < deadline, "the refusal was not logged");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(text.matches("refused peer").count(), 1, "{text}");
        assert!(!text.contains("reset by peer"), "{text}");
        assert!(!text.contains("bad frame"), "{text}");
    })
    .await
    .expect("test bounded");
}
