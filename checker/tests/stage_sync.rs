//! `replicore-check stage-sync`: exit codes, counterexamples, replay, the liveness graph,
//! JSON and `list`. Every config here checks in well under a second in release.

use assert_cmd::Command;
use replicore_model::stage_sync::model::props;
use replicore_model::stage_sync::{Mutant, Scenario};

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

/// The replay command printed with the first counterexample, as arguments.
fn replay_args(out: &str) -> Vec<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("replay:  replicore-check "))
        .expect("a replay command")
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn every_scenario_holds_reaches_and_converges() {
    for s in Scenario::ALL {
        let (code, out, _) = check(&["stage-sync", "--scenario", s.name()]);
        if s == Scenario::Starve {
            assert_eq!(code, 0, "aged priorities do not starve: {out}");
        } else {
            assert_eq!(code, 0, "{out}");
        }
        assert!(
            out.contains(&format!(
                "holds        always     {}",
                props::SAME_OPS_SAME_JOURNAL
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "holds        graph      {}",
                props::CONVERGENCE_REACHABLE
            )),
            "{out}"
        );
        assert!(out.contains("OK: every property as expected"), "{out}");
    }
}

#[test]
fn fixed_priorities_starve_with_a_counterexample_that_replays() {
    let (code, out, _) = check(&["stage-sync", "--scenario", "starve", "--ordering", "fixed"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("VIOLATED     always     {}", props::STARVATION)),
        "{out}"
    );
    let args = replay_args(&out);
    // Starvation is a safety property (bounded attempts): the replay ends in it, exit 1.
    let (code, trace, err) = check(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{err}");
    assert!(
        trace.contains(&format!("false  {}", props::STARVATION)),
        "{trace}"
    );
}

#[test]
fn every_mutant_exits_1_with_a_counterexample_that_replays() {
    for m in Mutant::ALL {
        let (property, cfg) = m.breaks();
        let args = [
            "stage-sync",
            "--scenario",
            cfg.scenario.name(),
            "--mutant",
            m.name(),
        ];
        let (code, out, _) = check(&args);
        assert_eq!(code, 1, "{out}");
        let kind = if property == props::CONVERGENCE_REACHABLE {
            "graph     "
        } else {
            "always    "
        };
        assert!(
            out.contains(&format!("VIOLATED     {kind} {property}")),
            "{m:?}: {out}"
        );
        assert!(out.contains("Counterexample 1:"), "{out}");
        let args = replay_args(&out);
        // A replay exits 1 when it ends in a safety violation; a liveness trap's trace ends
        // in a state where every safety property holds.
        let (code, trace, err) = check(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let safety = property != props::CONVERGENCE_REACHABLE;
        assert_eq!(code, if safety { 1 } else { 0 }, "{err}");
        if property != props::CONVERGENCE_REACHABLE {
            let first = out
                .lines()
                .find_map(|l| l.trim().strip_prefix("Counterexample 1: "))
                .expect("a counterexample");
            assert!(trace.contains(&format!("false  {first}")), "{trace}");
        }
    }
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["stage-sync", "--scenario", "nope"][..],
        &["stage-sync", "--ordering", "random"],
        &["stage-sync", "--stability", "maybe"],
        &["stage-sync", "--network", "ordered"],
        &["stage-sync", "--crashes", "3"],
        &["stage-sync", "--mutant", "none"],
        &["stage-sync", "--replay", "0/x"],
        &["stage-sync", "--replay", "0/99"],
    ] {
        let (code, out, err) = check(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn lossy_and_crashing_configs_hold_and_json_parses() {
    let (code, out, _) = check(&[
        "stage-sync",
        "--network",
        "lossy,duplicating",
        "--crashes",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["protocol"], "stage-sync");
    assert_eq!(doc["config_fields"]["lossy"], true);
    assert_eq!(doc["liveness_graph"]["ran"], true);
    assert!(doc["counts"]["unique_states"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn list_names_the_protocol_its_properties_and_mutants() {
    let (code, out, _) = check(&["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("protocol  stage-sync"), "{out}");
    assert!(out.contains(props::STARVATION), "{out}");
    for m in Mutant::ALL {
        assert!(out.contains(m.name()), "{out}");
    }
}
