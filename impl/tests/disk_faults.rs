//! Storage faults with real `replicore` processes on 127.0.0.1, fault × role
//! (`docs/reliability.md`, "Storage faults"): a zero-byte file, a truncated file, a flipped
//! byte in a value, a flipped byte in metadata, a missing or mistyped data directory, another
//! node's directory; for protocol 1's master and slave, failover's server, stage sync's
//! peer and a knowledge replica.
//!
//! A refusal is a non-zero exit, one line on stderr, and the file left byte for byte as it
//! was. The repairs are protocol 1's: a slave's damaged value is discarded (the file kept
//! aside) and the slave catches up from the master, serving the right value again; a master
//! whose store was lost (`--recover`) or whose value is damaged rebuilds from its slave and
//! hands out no version the slave holds.
//!
//! Every test runs under a `tokio::time::timeout`; waits poll a real outcome.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_replicore");
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const FILE: &str = "replicore.redb";

fn free_port() -> u16 {
    // Bind port 0 and release it: the OS hands out a free port, which the node binds next.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A cluster file for a master and one slave on free ports.
fn cluster_file(dir: &Path) -> (PathBuf, [u16; 2]) {
    let ports = [free_port(), free_port()];
    let config = dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "cluster_id = 9\nkey = \"disk key 0123456789\"\nmaster = \"127.0.0.1:{}\"\nslaves = [\"127.0.0.1:{}\"]\nheartbeat_ms = 50\n",
            ports[0], ports[1]
        ),
    )
    .expect("write config");
    (config, ports)
}

/// How one role is run: its node command, given its data directory.
#[derive(Clone, Copy, Debug)]
enum Role {
    Master,
    Slave,
    Failover,
    StagePeer,
    Replica,
}

impl Role {
    const ALL: [Role; 5] = [
        Role::Master,
        Role::Slave,
        Role::Failover,
        Role::StagePeer,
        Role::Replica,
    ];

    /// The arguments that open `dir` as this role (after `--config`).
    fn args(self, dir: &Path, ports: [u16; 2], id: u64) -> Vec<String> {
        let dir = dir.display().to_string();
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match self {
            Role::Master => s(&["master", "--data-dir", &dir]),
            Role::Slave => s(&["slave", "--id", &id.to_string(), "--data-dir", &dir]),
            Role::Failover => s(&[
                "failover",
                "serve",
                "--id",
                &id.to_string(),
                "--data-dir",
                &dir,
            ]),
            Role::StagePeer => {
                let peers = [
                    format!("127.0.0.1:{}", ports[0]),
                    format!("127.0.0.1:{}", ports[1]),
                ];
                s(&[
                    "stage-sync",
                    "peer",
                    "--id",
                    &id.to_string(),
                    "--peer",
                    &peers[0],
                    "--peer",
                    &peers[1],
                    "--data-dir",
                    &dir,
                ])
            }
            Role::Replica => s(&[
                "knowledge-sync",
                "replica-show",
                "--data-dir",
                &dir,
                "--replica",
                &id.to_string(),
            ]),
        }
    }

    /// The role a node of this kind records, as a flipped byte in metadata targets it.
    fn role_text(self) -> &'static [u8] {
        match self {
            Role::Master => b"master-slave/master",
            Role::Slave => b"master-slave/slave",
            Role::Failover => b"failover/server",
            Role::StagePeer => b"stage-sync/peer",
            Role::Replica => b"knowledge-sync/replica",
        }
    }

    /// Whether the command serves until stopped (rather than exiting by itself).
    fn serves(self) -> bool {
        !matches!(self, Role::Replica)
    }
}

/// Runs `args` to its exit, bounded; (exit code, stdout, stderr).
async fn run(config: &Path, args: &[String]) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("replicore {args:?} did not exit within 30 s"))
        .expect("replicore runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a serving node, waits until it listens; its log is `log`.
async fn spawn(config: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn replicore");
    wait_for(log, |l| l.contains("listening on") || l.contains("running")).await;
    child
}

async fn wait_for(log: &Path, what: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if what(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never showed the expected line:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a serving node gracefully (SIGTERM), so its file is closed cleanly.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `bytes` with one bit flipped in every copy of `needle` (redb copies pages on write, so
/// stale copies are flipped too); panics when there is none.
fn flip_all(bytes: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut found = 0;
    for at in 0..bytes.len().saturating_sub(needle.len()) {
        if &bytes[at..at + needle.len()] == needle {
            out[at + 3] ^= 0x01;
            found += 1;
        }
    }
    assert!(
        found > 0,
        "{:?} is stored in clear",
        String::from_utf8_lossy(needle)
    );
    out
}

/// Creates a store for `role` with node id `id` in `dir`, holding the value `stored-value`
/// where the role has data of its own; returns the file.
async fn create(role: Role, config: &Path, ports: [u16; 2], dir: &Path, id: u64) -> PathBuf {
    let mut args = vec!["--init".to_string()];
    args.extend(role.args(dir, ports, id));
    match role {
        Role::Replica => {
            let put = vec![
                "--init".into(),
                "knowledge-sync".into(),
                "replica-put".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--replica".into(),
                id.to_string(),
                "key".into(),
                "stored-value".into(),
            ];
            let (code, _, err) = run(config, &put).await;
            assert_eq!(code, Some(0), "{err}");
        }
        _ => {
            let log = dir.with_extension("create.log");
            let child = spawn(config, &args, &log).await;
            if matches!(role, Role::StagePeer) {
                let (code, _, err) = run(
                    config,
                    &[
                        "stage-sync".into(),
                        "insert".into(),
                        "--connect".into(),
                        format!("127.0.0.1:{}", ports[id as usize]),
                        "0".into(),
                        "stored-value".into(),
                    ],
                )
                .await;
                assert_eq!(code, Some(0), "{err}");
            }
            stop(child);
        }
    }
    dir.join(FILE)
}

/// Asserts that opening `dir` as `role` is refused in one line naming `expect`, within a
/// bound, and that `file` (if any) is left as it was.
async fn refused(
    role: Role,
    config: &Path,
    ports: [u16; 2],
    dir: &Path,
    id: u64,
    expect: &str,
    case: &str,
) {
    let file = dir.join(FILE);
    let before = std::fs::read(&file).ok();
    let (code, _, err) = run(config, &role.args(dir, ports, id)).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "{role:?}, {case}: refused with a non-zero exit, got {code:?}: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{role:?}, {case}: one line: {err}"
    );
    assert!(!err.contains("panicked"), "{role:?}, {case}: {err}");
    assert!(
        err.contains(expect),
        "{role:?}, {case}: {err:?} names {expect:?}"
    );
    assert!(
        std::fs::read(&file).ok() == before,
        "{role:?}, {case}: the file is left as it was"
    );
}

#[tokio::test]
async fn every_role_refuses_a_lost_damaged_or_foreign_store_in_one_line_and_leaves_it_alone() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (config, ports) = cluster_file(tmp.path());
        for role in Role::ALL {
            let id = if matches!(role, Role::Master) { 0 } else { 1 };
            let home = tmp.path().join(format!("{role:?}"));
            let file = create(role, &config, ports, &home, id).await;
            let good = std::fs::read(&file).expect("a store was created");
            let put = |bytes: &[u8]| std::fs::write(&file, bytes).expect("write the file");

            // A missing or mistyped data directory: refused, and nothing is created.
            let typo = tmp.path().join(format!("{role:?}-typo"));
            refused(
                role,
                &config,
                ports,
                &typo,
                id,
                "no replicore store",
                "missing dir",
            )
            .await;
            assert!(
                !typo.exists(),
                "{role:?}: a mistyped directory is not created"
            );
            // An empty directory.
            std::fs::create_dir_all(&typo).unwrap();
            refused(
                role,
                &config,
                ports,
                &typo,
                id,
                "no replicore store",
                "empty dir",
            )
            .await;

            // Another node's directory: protocol 1's master and slave swap directories, the
            // other roles open theirs under another id.
            let (as_role, other) = match role {
                Role::Master => (Role::Slave, 1),
                Role::Slave => (Role::Master, 0),
                _ => (role, 1 - id),
            };
            let expect = "belongs to node";
            refused(
                as_role,
                &config,
                ports,
                &home,
                other,
                expect,
                "another node's dir",
            )
            .await;

            put(&[]);
            refused(
                role,
                &config,
                ports,
                &home,
                id,
                "is empty (0 bytes)",
                "zero bytes",
            )
            .await;
            put(&good[..good.len() / 2]);
            refused(role, &config, ports, &home, id, FILE, "truncated to half").await;
            put(&good[..4096.min(good.len())]);
            refused(role, &config, ports, &home, id, FILE, "truncated to 4 KiB").await;
            let mut header = good.clone();
            header[16..160].fill(0x5A);
            put(&header);
            refused(role, &config, ports, &home, id, FILE, "header damaged").await;
            put(&flip_all(&good, role.role_text()));
            refused(
                role,
                &config,
                ports,
                &home,
                id,
                "meta row role",
                "flipped metadata",
            )
            .await;
            if matches!(role, Role::StagePeer | Role::Replica) {
                // A flipped byte in a value: refused (protocol 1's nodes are tested below;
                // a failover server alone holds no value: its writes need the backup).
                put(&flip_all(&good, b"stored-value"));
                refused(
                    role,
                    &config,
                    ports,
                    &home,
                    id,
                    ": damaged ",
                    "flipped value",
                )
                .await;
            }
            // A zero-length file is damage, not absence: --init does not recreate it.
            put(&[]);
            let mut init = vec!["--init".to_string()];
            init.extend(role.args(&home, ports, id));
            let (code, _, err) = run(&config, &init).await;
            assert!(
                code.is_some_and(|c| c != 0),
                "{role:?}: --init on a 0-byte file: {err}"
            );
            assert!(
                std::fs::read(&file).unwrap().is_empty(),
                "{role:?}: still empty"
            );
            if role.serves() {
                // Restored, the store opens again.
                put(&good);
                let log = home.with_extension("restored.log");
                stop(spawn(&config, &role.args(&home, ports, id), &log).await);
            }
        }
    })
    .await
    .expect("test bounded");
}

/// `replicore get key --node n`.
async fn get(config: &Path, node: u64) -> Option<String> {
    let (code, out, _) = run(
        config,
        &[
            "get".into(),
            "key".into(),
            "--node".into(),
            node.to_string(),
        ],
    )
    .await;
    (code == Some(0)).then(|| out.trim().to_string())
}

#[tokio::test]
async fn a_slave_discards_a_damaged_value_and_repairs_from_the_master() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (config, ports) = cluster_file(tmp.path());
        let (mdir, sdir) = (tmp.path().join("master"), tmp.path().join("slave"));
        let init = |role: Role, dir: &Path, id| {
            let mut a = vec!["--init".to_string()];
            a.extend(role.args(dir, ports, id));
            a
        };
        let master = spawn(
            &config,
            &init(Role::Master, &mdir, 0),
            &tmp.path().join("m1.log"),
        )
        .await;
        let slave = spawn(
            &config,
            &init(Role::Slave, &sdir, 1),
            &tmp.path().join("s1.log"),
        )
        .await;
        let (code, _, err) = run(
            &config,
            &["put".into(), "key".into(), "stored-value".into()],
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while get(&config, 1).await.as_deref() != Some("stored-value") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slave never got the value"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop(slave);

        // The slave's value is damaged on disk: it is discarded, never served, and the slave
        // catches up from the master.
        let sfile = sdir.join(FILE);
        let damaged = flip_all(&std::fs::read(&sfile).unwrap(), b"stored-value");
        std::fs::write(&sfile, &damaged).unwrap();
        let log = tmp.path().join("s2.log");
        let slave = spawn(&config, &Role::Slave.args(&sdir, ports, 1), &log).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("damaged data row \"key\""), "{text}");
        assert!(
            std::fs::read(sdir.join("replicore.redb.damaged")).unwrap() == damaged,
            "the damaged file is kept as it was"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = get(&config, 1).await;
            assert!(
                got.is_none() || got.as_deref() == Some("stored-value"),
                "a damaged value is never served: {got:?}"
            );
            if got.is_some() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slave never repaired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop(slave);

        stop(master);
    })
    .await
    .expect("test bounded");
}

/// `replicore --json ARGS`, parsed; (exit code, the JSON object).
async fn run_json(config: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut a = vec!["--json".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    let (code, out, err) = run(config, &a).await;
    let line = out.lines().next().unwrap_or("null");
    let json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, json)
}

/// Waits until node `node` serves `value` for `key`; returns the version it read at.
async fn serves(config: &Path, node: u64, key: &str, value: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, j) = run_json(config, &["get", key, "--node", &node.to_string()]).await;
        if code == Some(0) && j["value"] == value {
            return j["version"].as_u64().expect("a version");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {node} never served {key}={value}: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `replicore put KEY VALUE`; the version it committed as.
async fn put_version(config: &Path, key: &str, value: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // A master that is rebuilding serves nothing yet: the put is retried.
        let (code, j) = run_json(config, &["put", key, value, "--timeout", "3000"]).await;
        if code == Some(0) {
            return j["version"].as_u64().expect("a version");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "put {key}={value} never committed: {j}"
        );
    }
}

#[tokio::test]
async fn a_master_whose_store_is_lost_or_damaged_rebuilds_from_its_slave_and_never_reuses_a_version()
 {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (config, ports) = cluster_file(tmp.path());
        let (mdir, sdir) = (tmp.path().join("master"), tmp.path().join("slave"));
        let with = |flag: &str, role: Role, dir: &Path, id| {
            let mut a = vec![flag.to_string()];
            a.extend(role.args(dir, ports, id));
            a
        };
        let log = |name: &str| tmp.path().join(name);
        let master = spawn(
            &config,
            &with("--init", Role::Master, &mdir, 0),
            &log("m1.log"),
        )
        .await;
        let slave = spawn(
            &config,
            &with("--init", Role::Slave, &sdir, 1),
            &log("s1.log"),
        )
        .await;
        put_version(&config, "key", "value-one").await;
        let v2 = put_version(&config, "key", "value-two").await;
        assert_eq!(serves(&config, 1, "key", "value-two").await, v2);

        // The master's directory is lost. Without --recover it is refused; with it, the
        // master rebuilds from its slave: the slave's data at the slave's version, and the
        // next update takes a version past it, never one the slave holds.
        stop(master);
        std::fs::remove_dir_all(&mdir).unwrap();
        refused(
            Role::Master,
            &config,
            ports,
            &mdir,
            0,
            "no replicore store",
            "lost",
        )
        .await;
        let master = spawn(
            &config,
            &with("--recover", Role::Master, &mdir, 0),
            &log("m2.log"),
        )
        .await;
        assert_eq!(serves(&config, 0, "key", "value-two").await, v2);
        let v3 = put_version(&config, "key", "value-three").await;
        assert!(v3 > v2, "a version past the slave's: {v3} after {v2}");
        assert_eq!(serves(&config, 1, "key", "value-three").await, v3);
        stop(master);

        // --recover on a directory that holds a store changes nothing.
        let mfile = mdir.join(FILE);
        let before = std::fs::read(&mfile).unwrap();
        let (code, _, err) = run(&config, &with("--recover", Role::Master, &mdir, 0)).await;
        assert!(
            code.is_some_and(|c| c != 0) && err.contains("already holds a store"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(std::fs::read(&mfile).unwrap() == before, "left as it was");

        // The master's value is damaged: the file is kept aside, the damaged value is never
        // served, and the master rebuilds from its slave.
        let damaged = flip_all(&before, b"value-three");
        std::fs::write(&mfile, &damaged).unwrap();
        let m3 = log("m3.log");
        let master = spawn(&config, &Role::Master.args(&mdir, ports, 0), &m3).await;
        let text = std::fs::read_to_string(&m3).unwrap();
        assert!(text.contains("damaged data row \"key\""), "{text}");
        assert!(std::fs::read(mdir.join("replicore.redb.damaged")).unwrap() == damaged);
        assert_eq!(serves(&config, 0, "key", "value-three").await, v3);
        let v4 = put_version(&config, "key", "value-four").await;
        assert!(v4 > v3, "{v4} after {v3}");
        assert_eq!(serves(&config, 1, "key", "value-four").await, v4);
        stop(master);
        stop(slave);
    })
    .await
    .expect("test bounded");
}

#[tokio::test]
async fn a_slave_refuses_a_master_created_again_with_init_and_follows_it_once_it_recovers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (config, ports) = cluster_file(tmp.path());
        let (mdir, sdir) = (tmp.path().join("master"), tmp.path().join("slave"));
        let with = |flag: &str, role: Role, dir: &Path, id| {
            let mut a = vec![flag.to_string()];
            a.extend(role.args(dir, ports, id));
            a
        };
        let log = |name: &str| tmp.path().join(name);
        let master = spawn(
            &config,
            &with("--init", Role::Master, &mdir, 0),
            &log("m1.log"),
        )
        .await;
        let slave_log = log("s1.log");
        let slave = spawn(&config, &with("--init", Role::Slave, &sdir, 1), &slave_log).await;
        put_version(&config, "key", "value-one").await;
        let v2 = put_version(&config, "key", "value-two").await;
        assert_eq!(serves(&config, 1, "key", "value-two").await, v2);

        // The master's store is lost and the operator creates it again with --init: a new
        // cluster under the same id. Its slave refuses it, both sides say why, and whatever
        // the new master commits never reaches the slave's copy.
        stop(master);
        std::fs::remove_dir_all(&mdir).unwrap();
        let m2 = log("m2.log");
        let master = spawn(&config, &with("--init", Role::Master, &mdir, 0), &m2).await;
        let why = "another creation of cluster";
        wait_for(&slave_log, |t| t.contains(why)).await;
        wait_for(&m2, |t| t.contains(why)).await;
        let _ = run(
            &config,
            &[
                "put".into(),
                "key".into(),
                "value-of-another-cluster".into(),
            ],
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(serves(&config, 1, "key", "value-two").await, v2);
        stop(master);

        // Started with --recover instead, the master joins the slave's incarnation and
        // rebuilds from it.
        std::fs::remove_dir_all(&mdir).unwrap();
        let master = spawn(
            &config,
            &with("--recover", Role::Master, &mdir, 0),
            &log("m3.log"),
        )
        .await;
        assert_eq!(serves(&config, 0, "key", "value-two").await, v2);
        let v3 = put_version(&config, "key", "value-three").await;
        assert!(v3 > v2, "{v3} after {v2}");
        assert_eq!(serves(&config, 1, "key", "value-three").await, v3);
        stop(master);

        // Restarted, the recovered master keeps the incarnation it joined.
        let master = spawn(&config, &Role::Master.args(&mdir, ports, 0), &log("m4.log")).await;
        let v4 = put_version(&config, "key", "value-four").await;
        assert_eq!(serves(&config, 1, "key", "value-four").await, v4);
        stop(master);
        stop(slave);
    })
    .await
    .expect("test bounded");
}
