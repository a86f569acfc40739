//! `replicore-check knowledge-sync`: exit codes, counterexamples, replay, JSON and `list`.
//! Every config here checks in well under a second in release.

use assert_cmd::Command;
use replicore_model::knowledge::{Mutant, Scenario};

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

#[test]
fn every_scenario_holds_and_reaches_its_properties() {
    for s in Scenario::ALL {
        let (code, out, _) = check(&["knowledge-sync", "--scenario", s.name()]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(
                "holds        always     knowledge never claims a change the replica has not applied"
            ),
            "{out}"
        );
        assert!(out.contains("OK: every property as expected"), "{out}");
        assert!(!out.contains("NOT REACHED"), "{out}");
    }
    let (_, out, _) = check(&["knowledge-sync", "--scenario", "recovery"]);
    assert!(
        out.contains("reached      sometimes  a replica recovers by full enumeration"),
        "{out}"
    );
}

#[test]
fn every_mutant_exits_1_with_a_counterexample_that_replays() {
    for m in Mutant::ALL {
        let (property, cfg) = m.breaks();
        let scenario = cfg.scenario.name();
        let crashes = cfg.max_crashes.to_string();
        let disk_faults = cfg.disk_faults.to_string();
        let args = [
            "knowledge-sync",
            "--scenario",
            scenario,
            "--crashes",
            &crashes,
            "--disk-faults",
            &disk_faults,
            "--mutant",
            m.name(),
        ];
        let (code, out, _) = check(&args);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!("VIOLATED     always     {property}")),
            "{out}"
        );
        assert!(out.contains("Counterexample 1:"), "{out}");
        let replay = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("replay:  replicore-check "))
            .expect("a replay command");
        let replay_args: Vec<&str> = replay.split_whitespace().collect();
        // The trace ends in the violation of a safety property: its replay exits 1.
        let (code, trace, err) = check(&replay_args);
        assert_eq!(code, 1, "{err}");
        assert!(trace.contains(&format!("false  {property}")), "{trace}");
    }
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["knowledge-sync", "--scenario", "nope"][..],
        &["knowledge-sync", "--policy", "first-wins"],
        &["knowledge-sync", "--network", "ordered"],
        &["knowledge-sync", "--crashes", "3"],
        &["knowledge-sync", "--replay", "0/x"],
    ] {
        let (code, out, err) = check(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_lossy_network_is_decided_on_the_loss_free_space_and_json_parses() {
    let (code, out, _) = check(&[
        "knowledge-sync",
        "--network",
        "lossy,duplicating",
        "--crashes",
        "0",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["protocol"], "knowledge-sync");
    assert_eq!(doc["config_fields"]["lossy"], true);
    assert!(
        doc["explored"]["config"]
            .as_str()
            .is_some_and(|c| c.contains("network=duplicating")),
        "{out}"
    );
    assert!(doc["counts"]["unique_states"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn list_names_the_protocol_its_properties_and_mutants() {
    let (code, out, _) = check(&["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("protocol  knowledge-sync"), "{out}");
    assert!(out.contains("a filtered sync completes"), "{out}");
    for m in Mutant::ALL {
        assert!(out.contains(m.name()), "{out}");
    }
}
