#!/usr/bin/env bash
# Mutation testing of the protocols' files with their suite as the test.
#   checker/scripts/mutants.sh PROTOCOL [SHARD]      e.g. master-slave 1/8
# PROTOCOL is master-slave, failover, knowledge-sync or stage-sync; SHARD k/n runs every n-th
# mutant starting at k-1 (cargo-mutants' round-robin sharding), so a long run can be split
# across sessions. Each mutant is built in release and judged by the quick tier of that
# protocol's suite, stopped at its first failing line (checker/tests/mutation.rs).
# Results: mutants.out/<protocol>[-k-of-n]/ (outcomes.json, caught.txt, missed.txt, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
protocol=${1:?usage: checker/scripts/mutants.sh PROTOCOL [SHARD]}
shard=${2:-}
case "$protocol" in
master-slave)
    files=(model/src/master_slave/{master,master_user,slave,slave_user,client}.rs) ;;
failover)
    files=(model/src/failover/{node,client}.rs) ;;
knowledge-sync)
    files=(model/src/knowledge/{replica,app,vector}.rs) ;;
stage-sync)
    files=(model/src/stage_sync/{peer,document,msg}.rs) ;;
*)
    echo "unknown protocol '$protocol' (expected master-slave, failover, knowledge-sync or stage-sync)" >&2
    exit 2 ;;
esac
args=()
for f in "${files[@]}"; do args+=(--file "$f"); done
out="mutants.out/$protocol"
if [[ -n "$shard" ]]; then
    args+=(--shard "$shard" --sharding round-robin)
    out="$out-${shard/\//-of-}"
fi
mkdir -p "$out"
export REPLICORE_MUTATION_SUITE=$protocol
# Incremental release builds: a mutant rebuilds in seconds instead of half a minute.
export CARGO_PROFILE_RELEASE_INCREMENTAL=true
cargo mutants --package replicore-model --test-package replicore-checker \
    --profile release --baseline skip --timeout 600 --build-timeout 900 \
    "${args[@]}" --output "$out" \
    -- --test mutation -- --ignored
