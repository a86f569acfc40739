#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each); not part of CI.
#   fuzz/run.sh            # 60 s per target
#   FUZZ_SECS=600 fuzz/run.sh frame_decode
# Needs cargo-fuzz (cargo install cargo-fuzz). On a stable toolchain, libFuzzer's nightly
# flags are enabled with RUSTC_BOOTSTRAP=1. A crash leaves its input in
# fuzz/artifacts/<target>/; turn it into a regression test (see docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decode handshake trace_line)
fi
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs} s"
    cargo fuzz run --release "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048
done
