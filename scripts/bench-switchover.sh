#!/usr/bin/env bash
# The switchover window, measured over several runs of tests/switchover.rs
# (issue #12): per run, the short requests that failed and the span they fall
# in, and how long after `kill -9` the new master removed the steering.
#   RUNS=10 bash scripts/bench-switchover.sh
# Needs root (network namespaces) and nftables; builds in release mode.
set -euo pipefail
runs=${RUNS:-6}
cargo test --release --test switchover --no-run >/dev/null 2>&1
for i in $(seq 1 "$runs"); do
    cargo test --release --test switchover -- --nocapture 2>&1 |
        grep -E "^(switchover:|kill -9:|steering removed)" | sed "s/^/run $i: /"
done
