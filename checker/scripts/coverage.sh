#!/usr/bin/env bash
# Line and region coverage of the protocol files under the quick suite.
#   checker/scripts/coverage.sh [--full]     (needs cargo-llvm-cov and an llvm-cov matching rustc's LLVM)
# Prints one row per file of model/src/<protocol>/ (the protocols' own files; the runtime,
# the checker and the model's shared helpers are left out) and writes the uncovered lines to
# target/coverage/uncovered.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
llvm_bin=${LLVM_BIN:-/usr/lib/llvm-22/bin}
export LLVM_COV=${LLVM_COV:-$llvm_bin/llvm-cov}
export LLVM_PROFDATA=${LLVM_PROFDATA:-$llvm_bin/llvm-profdata}
tier=--quick
[[ "${1:-}" == "--full" ]] && tier=
cargo llvm-cov clean --workspace
cargo llvm-cov run --release -p replicore-checker --no-report -- suite $tier --threads 2
# The instrumented binary's profile, read with llvm-cov directly (cargo llvm-cov's report
# looks for test binaries, not a `run`).
out=target/coverage
mkdir -p "$out"
objdir=${CARGO_TARGET_DIR:-target}/llvm-cov-target
"$LLVM_PROFDATA" merge -sparse "$objdir"/*.profraw -o "$out/suite.profdata"
files=$(ls model/src/{master_slave,failover,knowledge,stage_sync}/*.rs model/src/master_slave/model/*.rs)
"$LLVM_COV" report "$objdir/release/replicore-check" -instr-profile="$out/suite.profdata" \
    $files | tee "$out/summary.txt"
"$LLVM_COV" show "$objdir/release/replicore-check" -instr-profile="$out/suite.profdata" \
    -show-line-counts $files > "$out/lines.txt"
# Uncovered lines: a line whose count is 0.
awk '/^\/.*\.rs:$/ { file = $0 } /^ *[0-9]+\| *0\|/ { print file " " $0 }' \
    "$out/lines.txt" > "$out/uncovered.txt"
echo "uncovered lines: $out/uncovered.txt ($(wc -l < "$out/uncovered.txt"))"
