//! `--explore`: the Explorer of every protocol names steps and nodes in the checker's words.
//! Each test starts the Explorer on a port of 127.0.0.1, asks it for the steps from the
//! initial state over HTTP, and stops it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Explorer's process, killed when the test ends whatever its outcome.
struct Explorer(Child);

impl Drop for Explorer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The body of `GET path`, or None while the server is not up.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// The steps the Explorer offers from the first initial state of `protocol` under `args`:
/// each step's (action, outcome).
fn first_steps(protocol: &str, args: &[&str]) -> Vec<(String, String)> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _explorer = Explorer(
        Command::new(assert_cmd::cargo::cargo_bin("replicore-check"))
            .arg(protocol)
            .args(args)
            .args(["--explore", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the checker starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(body) = get(port, "/.states/0") {
            break body;
        }
        assert!(Instant::now() < deadline, "no Explorer on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let views: Vec<serde_json::Value> = serde_json::from_str(&body).expect("a JSON list");
    views
        .iter()
        .map(|v| {
            (
                v["action"].as_str().unwrap_or_default().to_string(),
                v["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// No step reads as the model's `Debug`; each outcome lists the nodes after the step.
fn assert_in_words(steps: &[(String, String)], node: &str) {
    assert!(!steps.is_empty());
    for (action, outcome) in steps {
        for raw in ["Deliver {", "Timeout(", "Id(", "Crash(", "Recover("] {
            assert!(!action.contains(raw), "{action}");
            assert!(!outcome.contains(raw), "{outcome}");
        }
        assert!(!action.is_empty());
        assert!(
            !outcome.lines().next().unwrap_or_default().is_empty(),
            "{outcome:?}"
        );
        assert!(
            outcome.lines().skip(1).any(|l| l.starts_with(node)),
            "no line for {node} in {outcome:?}"
        );
    }
}

#[test]
fn master_slave_steps_read_as_the_traces_do() {
    let steps = first_steps("master-slave", &["--slaves", "1", "--script", "1p"]);
    assert_in_words(&steps, "master");
    assert!(steps.iter().any(|(a, _)| a.contains("client")), "{steps:?}");
}

#[test]
fn failover_steps_read_as_the_traces_do() {
    let steps = first_steps("failover", &[]);
    assert_in_words(&steps, "master");
}

#[test]
fn knowledge_sync_steps_read_as_the_traces_do() {
    let steps = first_steps("knowledge-sync", &[]);
    assert_in_words(&steps, "replica");
}

#[test]
fn stage_sync_steps_read_as_the_traces_do() {
    let steps = first_steps("stage-sync", &[]);
    assert_in_words(&steps, "peer");
}
