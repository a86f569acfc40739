//! `replicore-check failover`: exit codes, the seed's counterexamples, every mutant, replay
//! and bad usage. Every config here checks in a few seconds in release.

use assert_cmd::Command;
use replicore_model::failover::Mutant;
use replicore_model::failover::model::{props, script_text};

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
fn the_shipped_variant_holds_every_property_and_the_liveness_graph() {
    let (code, out, _) = check(&["failover"]);
    assert_eq!(code, 0, "{out}");
    for p in [
        props::ONE_APPROVER,
        props::NO_DIVERGENCE,
        props::ACKED_SURVIVE,
        props::LINEARIZABLE,
    ] {
        assert!(
            out.contains(&format!("holds        always     {p}")),
            "{out}"
        );
    }
    for p in [
        props::REACH_TAKEOVER,
        props::REACH_DONE,
        props::REACH_REJOIN,
    ] {
        assert!(
            out.contains(&format!("reached      sometimes  {p}")),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!(
            "holds        graph      {}",
            props::PENDING_COMPLETE
        )),
        "{out}"
    );
    assert!(out.contains("unique       84867"), "{out}");
    assert!(out.contains("OK: every property as expected"), "{out}");
}

/// The seed as written, with no crash at all: the checker prints the split brain, the
/// acknowledged update missing at the backup that took over, and the stale read; the split
/// brain's trace replays to a state where the property is false.
#[test]
fn the_seed_is_refuted_with_printed_counterexamples_that_replay() {
    let base = [
        "failover",
        "--variant",
        "seed",
        "--script",
        "w1,w2,r",
        "--crashes",
        "0",
        "--strategy",
        "bfs",
    ];
    let (code, out, _) = check(&base);
    assert_eq!(code, 1, "{out}");
    for p in [
        props::ONE_APPROVER,
        props::NO_DIVERGENCE,
        props::ACKED_SURVIVE,
        props::LINEARIZABLE,
    ] {
        assert!(
            out.contains(&format!("VIOLATED     always     {p}")),
            "{out}"
        );
        assert!(
            out.contains(&format!(": {p}\n")),
            "a counterexample for {p}: {out}"
        );
    }
    assert!(out.contains("master unable"), "{out}");
    assert!(!out.contains("crashes\n"), "no crash in any trace: {out}");
    // The split brain's path, printed on its replay line, replays to a violation.
    let block = out
        .split("Counterexample ")
        .find(|b| b.contains(props::ONE_APPROVER) && b.contains("replay:"))
        .expect("the split brain's counterexample");
    let path = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay:"))
        .and_then(|l| l.split("--replay ").nth(1))
        .expect("a replay command")
        .trim()
        .to_string();
    let mut args: Vec<&str> = base[..7].to_vec();
    args.extend(["--replay", &path]);
    // A replay that ends in the violation exits 1.
    let (code, replayed, _) = check(&args);
    assert_eq!(code, 1, "{replayed}");
    assert!(
        replayed.contains(&format!("false  {}", props::ONE_APPROVER)),
        "{replayed}"
    );
}

#[test]
fn every_mutant_exits_1_naming_the_property_it_breaks() {
    for m in Mutant::ALL {
        let (property, cfg) = m.breaks();
        let script = script_text(&cfg.script);
        let crashes = cfg.max_crashes.to_string();
        let args = [
            "failover",
            "--script",
            &script,
            "--crashes",
            &crashes,
            "--mutant",
            m.name(),
        ];
        let (code, out, _) = check(&args);
        assert_eq!(code, 1, "{}: {out}", m.name());
        let kind = if property == props::PENDING_COMPLETE {
            "graph    "
        } else {
            "always   "
        };
        assert!(
            out.contains(&format!("VIOLATED     {kind}  {property}")),
            "{}: {out}",
            m.name()
        );
        assert!(out.contains("Counterexample 1:"), "{out}");
    }
}

#[test]
fn bad_usage_is_a_one_line_error_with_exit_2() {
    for args in [
        &["failover", "--variant", "raft"][..],
        &["failover", "--script", "w1,x"],
        &["failover", "--script", ""],
        &["failover", "--mutant", "nope"],
        &["failover", "--network", "ordered"],
        &["failover", "--variant", "seed", "--mutant", "no-fencing"],
        &["failover", "--crashes", "3"],
    ] {
        let (code, out, err) = check(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn list_names_the_protocol_its_properties_and_mutants() {
    let (code, out, _) = check(&["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("protocol  failover"), "{out}");
    assert!(out.contains(props::ONE_APPROVER), "{out}");
    for m in Mutant::ALL {
        let line = format!("mutant    failover                   {}:", m.name());
        assert!(out.contains(&line), "{out}");
    }
}
