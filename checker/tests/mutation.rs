//! The test cargo-mutants runs for each mutant of a protocol's files
//! (`checker/scripts/mutants.sh`): the quick tier of that protocol's suite, stopping at the
//! first failing line. Ignored by `cargo test`: the same suite runs there as a documented
//! example (`checker/tests/docs.rs`).

use assert_cmd::Command;

#[test]
#[ignore = "run by checker/scripts/mutants.sh with REPLICORE_MUTATION_SUITE=<protocol>"]
fn the_protocols_quick_suite_catches_the_mutant() {
    let protocol = std::env::var("REPLICORE_MUTATION_SUITE")
        .expect("REPLICORE_MUTATION_SUITE names the protocol whose suite runs");
    let out = Command::cargo_bin("replicore-check")
        .expect("the binary is built")
        .args(["suite", &protocol, "--quick", "--fail-fast"])
        .output()
        .expect("it runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
