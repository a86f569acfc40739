//! The command line's contract: exit codes, counterexamples in words, replay, JSON, `list`.
//! Every config here is small enough to check in well under a second in release.

use assert_cmd::Command;
use replicore_model::master_slave::Mutant;
use stateright::Model as _;

/// A small loss-free config with a crash, whose every property holds.
const SMALL: &[&str] = &[
    "master-slave",
    "--slaves",
    "1",
    "--script",
    "1p,2p",
    "--network",
    "duplicating",
    "--crashes",
    "1",
    "--history",
    "2",
];

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("replicore-check")
        .expect("the binary is built")
        .args(args)
        .output()
        .expect("it runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with(base: &[&str], more: &[&str]) -> Vec<String> {
    base.iter().chain(more).map(|s| s.to_string()).collect()
}

fn check_owned(args: &[String]) -> (i32, String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(&args)
}

#[test]
fn a_holding_config_exits_0() {
    let (code, out, _) = check(SMALL);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(
            "config:   master-slave: slaves=1 script=1p,2p network=duplicating crashes=1"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "holds        always     slave data is the master's committed data at its version"
        ),
        "{out}"
    );
    assert!(
        out.contains("holds        graph      convergence stays reachable from every state"),
        "{out}"
    );
    assert!(out.contains("OK: every property as expected"), "{out}");
    for field in [
        "states ",
        "unique ",
        "max depth ",
        "elapsed ",
        "states/s ",
        "peak memory ",
    ] {
        assert!(out.contains(field), "missing {field}: {out}");
    }
}

#[test]
fn a_mutant_exits_1_with_a_counterexample_naming_the_breaking_step() {
    let args = with(SMALL, &["--mutant", "expose-prepared-data"]);
    let (code, out, _) = check_owned(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("VIOLATED     always     slave data is the master's committed data at its version  [counterexample 1]"), "{out}");
    assert!(
        out.contains("Counterexample 1: slave data is the master's committed data at its version"),
        "{out}"
    );
    // The slave that exposes the prepared delta took it from a Prepare and then reached the
    // prior version: both steps are in the trace, with their effect.
    assert!(out.contains("receives Prepare{v1→v2"), "{out}");
    assert!(out.contains(": now at v1, prepared v2"), "{out}");
    assert!(out.contains("data {0:1, 1:2}, prepared v2"), "{out}");

    // The printed replay command prints the same steps again.
    let replay = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay:  "))
        .expect("a replay line");
    let words: Vec<&str> = replay.split_whitespace().skip(1).collect();
    // The trace ends in the violation, so its replay exits 1 and says so.
    let (code, again, err) = check(&words);
    assert_eq!(code, 1, "{err}");
    assert!(
        again.contains(
            "VIOLATED at the last state: slave data is the master's committed data at its version"
        ),
        "{again}"
    );
    let steps = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.trim_start()
                    .split_once(". ")
                    .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            })
            .map(str::to_string)
            .collect()
    };
    assert!(!steps(&out).is_empty());
    assert_eq!(steps(&out), steps(&again));
    assert!(
        again.contains("false  slave data is the master's committed data at its version"),
        "{again}"
    );
}

#[test]
fn a_liveness_mutant_exits_1() {
    let (code, out, _) = check(&[
        "master-slave",
        "--slaves",
        "1",
        "--script",
        "1p",
        "--crashes",
        "0",
        "--mutant",
        "heartbeat-once",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("VIOLATED     eventually every slave converges once faults stop"),
        "{out}"
    );
    assert!(out.contains("network drops"), "{out}");
}

/// A crash-free lossy config, whose every subset of undelivered messages Stateright's own
/// checker would enumerate, is decided by losing everything at once: every property and
/// `Eventually` hold, and its mutant refuted on commit validity stops at the counterexample.
#[test]
fn crash_free_lossy_configs_are_decided_in_one_pass() {
    let (code, out, _) = check(&["master-slave", "--crashes", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("losses explored all at once"), "{out}");
    assert!(
        out.contains("holds        eventually every slave converges once faults stop"),
        "{out}"
    );
    assert!(out.contains("holds        graph"), "{out}");
    let (code, out, _) = check(&[
        "master-slave",
        "--slaves",
        "3",
        "--script",
        "2p",
        "--crashes",
        "0",
        "--mutant",
        "commit-on-majority",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "VIOLATED     always     the master commits only after every participant voted prepared"
        ),
        "{out}"
    );
}

/// With a crash allowed, the graph check still sees what loss does: a slave that asks for a
/// lost delta only once is stranded, through a step the network drops.
#[test]
fn a_loss_driven_trap_is_found_with_crashes_allowed() {
    let (code, out, _) = check(&[
        "master-slave",
        "--slaves",
        "2",
        "--script",
        "1p",
        "--crashes",
        "1",
        "--mutant",
        "no-delta-retry",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("VIOLATED     graph      convergence stays reachable from every state"),
        "{out}"
    );
    assert!(out.contains("network drops"), "{out}");
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let cases: &[&[&str]] = &[
        &["master-slave", "--slaves", "0"],
        &["master-slave", "--clients", "0"],
        &["master-slave", "--clients", "9"],
        &["master-slave", "--network", "lossy"],
        &["master-slave", "--network", "lossy,ordered,duplicating"],
        &["master-slave", "--script", "1p,3p"],
        &["master-slave", "--mutant", "no-such-mutant"],
        &["master-slave", "--strategy", "sideways"],
        &["master-slave", "--bogus"],
        &["no-such-protocol"],
        &[],
    ];
    for args in cases {
        let (code, _, err) = check(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") || err.contains("Usage: replicore-check"),
            "{args:?}: {err}"
        );
    }
    // Our own checks print exactly one line.
    let own: &[&[&str]] = &[
        &["master-slave", "--slaves", "1", "--crashes", "3"],
        &["master-slave", "--replay", "0/999"],
        &["master-slave", "--replay", "zero"],
    ];
    for args in own {
        let (code, _, err) = check(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_depth_bound_exits_3_loudly() {
    let args = with(SMALL, &["--depth", "3"]);
    let (code, out, err) = check_owned(&args);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("PARTIAL CHECK, NOT A PROOF: stopped by --depth 3"),
        "{out}"
    );
    assert!(err.contains("PARTIAL CHECK"), "{err}");
    assert!(out.contains("undecided    always"), "{out}");
}

#[test]
fn clients_are_echoed_and_kept_in_the_json_config() {
    let (code, out, _) = check(&[
        "master-slave",
        "--slaves",
        "1",
        "--script",
        "2p",
        "--clients",
        "3",
        "--depth",
        "8",
        "--json",
    ]);
    assert_eq!(code, 3, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["config_fields"]["clients"], 3, "{out}");
    assert!(
        doc["config"].as_str().unwrap().contains("clients=3"),
        "{out}"
    );
}

#[test]
fn a_simulation_is_partial() {
    let args = with(
        SMALL,
        &["--strategy", "simulation", "--seed", "7", "--timeout", "1"],
    );
    let (code, out, _) = check_owned(&args);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("seed 7"), "{out}");
}

#[test]
fn json_parses_and_matches_the_text() {
    let args = with(SMALL, &["--threads", "1"]);
    let (code, text, _) = check_owned(&args);
    assert_eq!(code, 0);
    let args = with(SMALL, &["--threads", "1", "--json"]);
    let (code, json, _) = check_owned(&args);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
    assert_eq!(doc["schema"], "replicore-check/1");
    assert_eq!(doc["protocol"], "master-slave");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["complete"], true);
    let field = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .expect("a count line");
        line[name.len()..].trim().parse().expect("a number")
    };
    assert_eq!(doc["counts"]["states"].as_u64(), Some(field("states ")));
    assert_eq!(
        doc["counts"]["unique_states"].as_u64(),
        Some(field("unique "))
    );
    assert_eq!(
        doc["counts"]["max_depth"].as_u64(),
        Some(field("max depth "))
    );
    let props = doc["properties"].as_array().expect("properties");
    assert!(
        props
            .iter()
            .any(|p| p["kind"] == "graph" && p["result"] == "holds")
    );
    assert!(props.iter().all(|p| p["result"] != "violated"));

    // A violation carries its steps.
    let args = with(SMALL, &["--mutant", "expose-prepared-data", "--json"]);
    let (code, json, _) = check_owned(&args);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
    let cx = &doc["counterexamples"][0];
    assert_eq!(cx["number"], 1);
    assert!(cx["steps"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(cx["final_state"].as_array().is_some_and(|n| n.len() == 3));
    assert!(
        cx["replay"]
            .as_str()
            .is_some_and(|r| r.contains("--replay "))
    );
}

#[test]
fn list_names_every_protocol_property_and_mutant() {
    let (code, out, _) = check(&["list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.starts_with("protocol  master-slave")),
        "{out}"
    );
    for m in Mutant::ALL {
        let line = out
            .lines()
            .find(|l| l.contains(&format!(" {}: ", m.name())))
            .unwrap_or_else(|| panic!("{} missing", m.name()));
        assert!(line.contains(m.description()), "{line}");
    }
    for p in replicore_model::master_slave::MasterSlaveConfig::default()
        .into_model()
        .properties()
    {
        assert!(out.contains(p.name), "{} missing", p.name);
    }
}

/// The README's main job: the default config, every property and the graph check in one
/// pass over its loss-free space and, for the graph, every state with its messages all lost
/// (about ten seconds).
#[test]
fn the_default_config_holds() {
    let (code, out, _) = check(&["master-slave"]);
    assert!(
        out.contains(
            "config:   master-slave: slaves=2 script=1p,2p,rb network=lossy,duplicating crashes=1"
        ),
        "{out}"
    );
    assert!(out.contains("losses explored all at once"), "{out}");
    assert!(!out.contains("explored:"), "{out}");
    assert!(out.contains("unique       455720"), "{out}");
    assert!(
        out.contains("holds        graph      convergence stays reachable from every state  (graph check on the config itself)"),
        "{out}"
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_timeout_exits_3_loudly() {
    let (code, out, err) = check(&["master-slave", "--timeout", "1", "--no-graph"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("PARTIAL CHECK, NOT A PROOF: stopped by --timeout 1 s"),
        "{out}"
    );
    assert!(err.contains("PARTIAL CHECK"), "{err}");
}

/// On an ordered network the model bounds the messages in flight; a state whose way on
/// crosses that bound is unexplored, not stuck, so the graph check does not call it a trap
/// (it did, with a client's retries filling the master's queue) and says how many there are.
#[test]
fn the_in_flight_bound_is_not_a_trap() {
    let (code, out, _) = check(&[
        "master-slave",
        "--slaves",
        "1",
        "--script",
        "1p",
        "--network",
        "ordered",
    ]);
    assert!(
        out.contains("holds        graph      convergence stays reachable from every state"),
        "{out}"
    );
    assert!(
        out.contains("past the model's bound on messages in flight count as converging"),
        "{out}"
    );
    assert_eq!(code, 0, "{out}");
}
