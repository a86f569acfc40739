#!/usr/bin/env bash
# Line and region coverage of the protocol files under the quick suite.
#   checker/scripts/coverage.sh [--full]     (needs cargo-llvm-cov and an llvm-cov matching rustc's LLVM)
# Prints one row per file of model/src/<protocol>/ and writes the uncovered lines to
# target/coverage/uncovered.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
llvm_bin=${LLVM_BIN:-/usr/lib/llvm-22/bin}
export LLVM_COV=${LLVM_COV:-$llvm_bin/llvm-cov}
export LLVM_PROFDATA=${LLVM_PROFDATA:-$llvm_bin/llvm-profdata}
tier=--quick
[[ "${1:-}" == "--full" ]] && tier=
# Only the protocols' own files count: the runtime, the checker, the explorer and the
# model's shared helpers are ignored.
root=$(pwd)
ignore="^$root/(impl|checker|explore|benches|examples|tests|src)/|^$root/model/(tests/|src/(store|harness|fingerprint|suite|lib)\\.rs)|/\\.cargo/|/rustc/"
cargo llvm-cov clean --workspace
cargo llvm-cov run --release -p replicore-checker --no-report -- suite $tier --threads 2
mkdir -p target/coverage
cargo llvm-cov report --release --summary-only --ignore-filename-regex "$ignore" |
    tee target/coverage/summary.txt
cargo llvm-cov report --release --text --ignore-filename-regex "$ignore" \
    --output-path target/coverage/lines.txt
# Uncovered lines: llvm-cov's text view marks a line never executed with a count of 0.
awk '/^\/.*\.rs:$/ { file = $0 } /^ *[0-9]+\| *0\|/ { print file " " $0 }' \
    target/coverage/lines.txt > target/coverage/uncovered.txt
echo "uncovered lines: target/coverage/uncovered.txt ($(wc -l < target/coverage/uncovered.txt))"
