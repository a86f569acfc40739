//! TLS on the one transport: certificates from files with refusals of a wrong CA, an expired
//! certificate and a credential used for another role; a byte flipped in flight; a CA and
//! certificate rotation under load that loses nothing. Real `replicore` processes (and the
//! library's nodes and clients) on 127.0.0.1 only, every test bounded in time.

use futures::{SinkExt, StreamExt};
use replicore_runtime::KvStore;
use replicore_runtime::Mode;
use replicore_runtime::master_slave::client::Client;
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use replicore_runtime::runtime::codec::{self, Frame, Query, Reply};
use replicore_runtime::runtime::handshake::Identity;
use replicore_runtime::runtime::tls::{CertFiles, CertPaths, Security};
use replicore_runtime::runtime::transport::{self, CLIENT_ID_MIN};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_replicore");
const KEY: &str = "tls-test-key-0123456789";
const CLUSTER: u64 = 9;
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

async fn wait_for_line(path: &Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Some(line) = s.lines().find(|l| l.contains(needle))
        {
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line with {needle:?} in {}: {}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `replicore gen-certs` into `out`, with extra flags.
fn gen_certs(out: &Path, nodes: u64, extra: &[&str]) {
    let st = Command::new(BIN)
        .args(["--cluster-id", &CLUSTER.to_string(), "gen-certs", "--out"])
        .arg(out)
        .args(["--nodes", &nodes.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .expect("gen-certs runs");
    assert!(st.success(), "gen-certs failed");
}

/// A protocol-1 cluster of processes whose cluster file names certificate files.
struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    ports: Vec<u16>,
    children: BTreeMap<u64, Child>,
    launches: u32,
}

impl Cluster {
    /// `slaves` slaves, certificates of a fresh CA in `certs/`, the CA bundle at `ca.pem`.
    fn new(slaves: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        gen_certs(&dir.path().join("certs"), slaves as u64 + 1, &[]);
        std::fs::copy(dir.path().join("certs/ca.pem"), dir.path().join("ca.pem")).unwrap();
        let ports: Vec<u16> = (0..=slaves).map(|_| free_port()).collect();
        let slave_list: Vec<String> = ports[1..]
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let config = dir.path().join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                "cluster_id = {CLUSTER}\nkey = \"{KEY}\"\nmaster = \"127.0.0.1:{}\"\nslaves = [{}]\nheartbeat_ms = 50\n\n[tls]\nca = \"ca.pem\"\ncert = \"certs/{{name}}.pem\"\nkey = \"certs/{{name}}.key\"\n",
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

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn log(&self, node: u64) -> PathBuf {
        self.path(&format!("node{node}-{}.log", self.launches))
    }

    /// Starts node `id` (0 = master) with extra flags; returns its log once it listens.
    async fn start_with(&mut self, id: u64, flags: &[&str]) -> PathBuf {
        self.launches += 1;
        let log = self.log(id);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let data = self.path(&format!("data{id}"));
        let mut cmd = Command::new(BIN);
        // --init: created on the first start, opened and checked on every restart.
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--init")
            .args(flags);
        if id == MASTER_ID {
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
        log
    }

    /// Stops node `id` gracefully (SIGTERM) and waits for it.
    fn stop(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            c.wait().expect("reap");
        }
    }

    /// Sends SIGHUP to every running node.
    fn hup_all(&self) {
        for c in self.children.values() {
            let st = Command::new("kill")
                .args(["-HUP", &c.id().to_string()])
                .status()
                .expect("kill -HUP");
            assert!(st.success());
        }
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

    /// Runs `args` expecting failure; returns its one stderr line.
    async fn refused(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(!out.status.success(), "replicore {args:?} succeeded");
        let last = stderr.lines().last().unwrap_or_default().to_string();
        assert!(last.starts_with("error: "), "{stderr}");
        last
    }

    /// The certificate files a process of role `stem` (node-<id>, client) uses.
    fn paths(&self, stem: &str) -> CertPaths {
        CertPaths {
            ca: self.path("ca.pem"),
            cert: self.path(&format!("certs/{stem}.pem")),
            key: self.path(&format!("certs/{stem}.key")),
        }
    }

    fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[id as usize])
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

/// A library client of node `id` with the client certificate files of `c`.
async fn client(c: &Cluster, id: u64, files: &CertFiles) -> Client {
    Client::connect_secured(
        &c.addr(id),
        CLUSTER,
        KEY.as_bytes(),
        None,
        Security::Certificates(files.clone()),
    )
    .await
    .expect("client connects")
}

#[tokio::test]
async fn certificates_replicate_and_wrong_expired_or_misused_credentials_are_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        let master_log = c.start_with(0, &[]).await;
        c.start_with(1, &[]).await;
        c.ok(&["put", "k", "v"]).await;
        assert_eq!(c.ok(&["get", "k", "--node", "1"]).await.trim(), "v");

        // Slave 2 with a certificate of another CA.
        gen_certs(&c.path("other"), 3, &[]);
        let data2 = c.path("data2").display().to_string();
        let slave2 = |cert: &str, key: &str| {
            vec![
                "--tls-cert".to_string(),
                c.path(cert).display().to_string(),
                "--tls-key".to_string(),
                c.path(key).display().to_string(),
                "slave".to_string(),
                "--id".to_string(),
                "2".to_string(),
                "--data-dir".to_string(),
                data2.clone(),
            ]
        };
        let args = slave2("other/node-2.pem", "other/node-2.key");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = c.refused(&args).await;
        assert!(line.contains("refused this node"), "{line}");
        // The other CA has the same name: its signature is what fails.
        let log = wait_for_line(&master_log, "invalid peer certificate: BadSignature").await;
        assert!(log.contains("refused peer"), "{log}");

        // Slave 2 with an expired certificate of the right CA.
        gen_certs(
            &c.path("expired"),
            3,
            &[
                "--ca-dir",
                &c.path("certs").display().to_string(),
                "--expired",
            ],
        );
        let args = slave2("expired/node-2.pem", "expired/node-2.key");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.refused(&args).await;
        let log = wait_for_line(&master_log, "certificate expired").await;
        assert!(log.contains("refused peer"), "{log}");

        // A client's credential used to connect as slave 2.
        let args = slave2("certs/client.pem", "certs/client.key");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = c.refused(&args).await;
        assert!(
            line.contains("refused this side after the key proof"),
            "{line}"
        );
        let log = wait_for_line(&master_log, "peer claims id 2").await;
        assert!(log.contains("client.cluster-9.replicore"), "{log}");

        // A slave's credential acting as the master: clients refuse it.
        let rogue = free_port();
        let rogue_log = c.path("rogue.log");
        let out = std::fs::File::create(&rogue_log).unwrap();
        let mut rogue_master = Command::new(BIN)
            .arg("--config")
            .arg(&c.config)
            .arg("--tls-cert")
            .arg(c.path("certs/node-1.pem"))
            .arg("--tls-key")
            .arg(c.path("certs/node-1.key"))
            .arg("--init")
            .args([
                "master",
                "--listen",
                &format!("127.0.0.1:{rogue}"),
                "--data-dir",
            ])
            .arg(c.path("rogue"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        wait_for_line(&rogue_log, "listening on").await;
        let line = c
            .refused(&["--master", &format!("127.0.0.1:{rogue}"), "put", "x", "y"])
            .await;
        assert!(line.contains("peer claims id 0"), "{line}");
        assert!(line.contains("node-1.cluster-9.replicore"), "{line}");
        let _ = rogue_master.kill();
        let _ = rogue_master.wait();

        // A plain-text client at a TLS node: refused without an answer, logged.
        let plain = Identity::new(CLUSTER, CLIENT_ID_MIN + 7, KEY).with_security(Security::Plain);
        let refused = transport::connect(&c.addr(0), &plain).await;
        assert!(refused.is_err(), "a plain-text client was accepted");
        wait_for_line(&master_log, "does not speak TLS").await;

        // Nothing of that disturbed the cluster.
        c.ok(&["put", "k2", "v2"]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while c.cli(&["get", "k2", "--node", "1"]).await.stdout != b"v2\n" {
            assert!(tokio::time::Instant::now() < deadline, "slave 1 lags");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("test bounded");
}

/// A TCP proxy from a fresh port to `target` that flips the last byte of the next chunk it
/// forwards towards `target` once `armed` is set.
async fn flipping_proxy(target: String, armed: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let armed = armed.clone();
            tokio::spawn(async move {
                let (mut ir, mut iw) = inbound.split();
                let (mut or, mut ow) = outbound.split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match ir.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if armed.swap(false, Ordering::SeqCst) {
                            buf[n - 1] ^= 0x01;
                        }
                        if ow.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut or, &mut iw).await;
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    addr
}

/// Asks `key` on `io`; the reply, or `None` when the connection closed.
async fn ask(io: &mut transport::Connection, key: &str) -> Option<Reply> {
    let frame = codec::encode(
        &Frame::<()>::Query(Query::Get {
            key: key.as_bytes().to_vec(),
        }),
        1 << 20,
    )
    .unwrap();
    io.send(frame).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(10), io.next()).await {
        Ok(Some(Ok(body))) => match codec::decode::<Frame<()>>(&body) {
            Ok(Frame::Reply(r)) => Some(r),
            other => panic!("unexpected {other:?}"),
        },
        Ok(_) => None,
        Err(_) => panic!("neither a reply nor a close within 10 s"),
    }
}

#[tokio::test]
async fn a_byte_flipped_in_flight_is_detected_and_the_connection_closed() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for security in [Security::DerivedKey, Security::Plain] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = NodeConfig::new(CLUSTER, KEY, MASTER_ID, 0, dir.path().join("m"));
            cfg.security = security.clone();
            cfg.init = true;
            let master = Node::<KvStore>::start(cfg).await.expect("master starts");
            master.put("k1", "v", Mode::OnePhase).await.unwrap();
            let armed = Arc::new(AtomicBool::new(false));
            let proxy = flipping_proxy(master.local_addr().to_string(), armed.clone()).await;
            let me = Identity::new(CLUSTER, CLIENT_ID_MIN + 1, KEY).with_security(security.clone());
            let (mut io, _) = transport::connect(&proxy, &me).await.expect("connects");
            io.codec_mut().set_max_frame_length(1 << 20);
            let value = |r: Option<Reply>| match r {
                Some(Reply::Value { value, .. }) => Some(value),
                _ => None,
            };
            assert_eq!(value(ask(&mut io, "k1").await), Some(Some(b"v".to_vec())));
            // The last byte of the next frame: the key's last character over plain TCP
            // ("k1" becomes "k0"), the record's authentication tag over TLS.
            armed.store(true, Ordering::SeqCst);
            let altered = ask(&mut io, "k1").await;
            match security {
                Security::Plain => {
                    // Undetected: the node answers the altered question.
                    assert_eq!(
                        value(altered),
                        Some(None),
                        "plain TCP let the change through"
                    );
                }
                _ => {
                    assert!(
                        altered.is_none(),
                        "TLS let an altered frame through: {altered:?}"
                    );
                    // The node closed that connection and serves others.
                    let (mut again, _) = transport::connect(&proxy, &me).await.expect("reconnects");
                    again.codec_mut().set_max_frame_length(1 << 20);
                    assert_eq!(
                        value(ask(&mut again, "k1").await),
                        Some(Some(b"v".to_vec()))
                    );
                }
            }
            master.shutdown().await.unwrap();
        }
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_ca_and_certificate_rotation_under_load_loses_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Cluster::new(2);
        for id in 0..=2 {
            c.start_with(id, &[]).await;
        }
        let client_files = CertFiles::load(c.paths("client")).expect("client certificates");

        // A steady stream of one-phase puts over one connection to the master.
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = client(&c, MASTER_ID, &client_files).await;
        let writer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), 0);
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("load{i}");
                    match load
                        .put(&key, b"x", Mode::OnePhase, Duration::from_secs(5))
                        .await
                    {
                        Ok(_) => acked.push(key),
                        Err(_) => failed += 1,
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, failed)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;

        // 1. A new CA beside the old one in every bundle.
        gen_certs(&c.path("new"), 3, &[]);
        let old_ca = std::fs::read_to_string(c.path("certs/ca.pem")).unwrap();
        let new_ca = std::fs::read_to_string(c.path("new/ca.pem")).unwrap();
        std::fs::write(c.path("ca.pem"), format!("{old_ca}{new_ca}")).unwrap();
        c.hup_all();
        client_files.reload().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // 2. Every certificate reissued by the new CA (the old client's kept aside).
        for ext in ["pem", "key"] {
            std::fs::copy(
                c.path(&format!("certs/client.{ext}")),
                c.path(&format!("old-client.{ext}")),
            )
            .unwrap();
        }
        for stem in ["node-0", "node-1", "node-2", "client"] {
            for ext in ["pem", "key"] {
                std::fs::copy(
                    c.path(&format!("new/{stem}.{ext}")),
                    c.path(&format!("certs/{stem}.{ext}")),
                )
                .unwrap();
            }
        }
        c.hup_all();
        client_files.reload().unwrap();
        // Slave 2 restarts: it now dials with the new certificate.
        c.stop(2);
        c.start_with(2, &[]).await;
        c.ok(&["put", "during", "rotation"]).await;

        // 3. The old CA retired: the bundle holds the new one only.
        std::fs::write(c.path("ca.pem"), &new_ca).unwrap();
        c.hup_all();
        client_files.reload().unwrap();
        let master_log = c.path("node0-1.log");
        for _ in 0..20 {
            if std::fs::read_to_string(&master_log)
                .unwrap_or_default()
                .matches("certificates reloaded")
                .count()
                >= 3
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Slave 1 restarts on the new certificate.
        c.stop(1);
        c.start_with(1, &[]).await;
        // A certificate of the old CA is refused now.
        let line = c
            .refused(&[
                "--tls-cert",
                &c.path("old-client.pem").display().to_string(),
                "--tls-key",
                &c.path("old-client.key").display().to_string(),
                "put",
                "old",
                "ca",
            ])
            .await;
        assert!(line.contains("cannot reach node 0"), "{line}");
        wait_for_line(&master_log, "invalid peer certificate").await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        stop.store(true, Ordering::SeqCst);
        let (acked, failed) = writer.await.unwrap();
        assert_eq!(failed, 0, "puts failed during the rotation");
        assert!(acked.len() > 50, "too little load: {}", acked.len());

        // Every acknowledged put is on every node.
        for id in 0..=2 {
            let mut reader = client(&c, id, &client_files).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            for key in &acked {
                loop {
                    let (_, v) = reader.get(key.as_bytes()).await.expect("get");
                    if v.as_deref() == Some(&b"x"[..]) {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "node {id} lacks {key}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await
    .expect("test bounded");
}

/// `gen-certs --json` names every file it wrote, each there and non-empty; a second run
/// under the saved CA writes no new CA key.
#[test]
fn gen_certs_json_lists_the_files_it_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |out: &Path, extra: &[&str]| -> serde_json::Value {
        let o = Command::new(BIN)
            .args([
                "--json",
                "--cluster-id",
                &CLUSTER.to_string(),
                "gen-certs",
                "--out",
            ])
            .arg(out)
            .args(["--nodes", "2"])
            .args(extra)
            .output()
            .expect("gen-certs runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("one JSON object")
    };
    let first = dir.path().join("first");
    let o = run(&first, &[]);
    assert_eq!(
        (&o["command"], &o["outcome"]),
        (&"gen-certs".into(), &"ok".into()),
        "{o}"
    );
    assert_eq!(
        (&o["cluster_id"], &o["new_ca"]),
        (&CLUSTER.into(), &true.into()),
        "{o}"
    );
    let files: Vec<&str> = o["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for f in [
        "ca.pem",
        "ca.key",
        "node-0.pem",
        "node-1.key",
        "client.pem",
        "client.key",
    ] {
        assert!(files.contains(&f), "{f} not listed in {o}");
    }
    assert_eq!(files.len(), 8, "{o}");
    for f in &files {
        let len = std::fs::metadata(first.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{f} is listed but not written");
    }
    let second = dir.path().join("second");
    let ca = first.to_str().expect("utf-8 path");
    let o = run(&second, &["--ca-dir", ca]);
    assert_eq!(o["new_ca"], false, "{o}");
    assert!(
        !o["files"].as_array().unwrap().contains(&"ca.key".into()),
        "{o}"
    );
    assert!(!second.join("ca.key").exists());
}
