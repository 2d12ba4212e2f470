#!/usr/bin/env bash
# Chaos soak on the namespace lab (tests/soak.rs): HTTP load on the VIP through a
# service, every request counted, while a loop kills the master's daemon, kills the
# master node (processes killed, link down), stops it with SIGTERM, restarts nodes,
# flaps the master's link, drops the traffic between the nodes at random (25 %) and
# in partition bursts, and an attacker host replays and forges heartbeats.
#
#   sudo scripts/soak.sh            # 10 minutes
#   sudo scripts/soak.sh 30         # 30 minutes
#
# It prints the report (failovers, requests failed inside each break's window, time
# with two / no serving node, requests failed outside every window) and fails when a
# request failed outside a window or two nodes served the VIP outside a partition.
# `cargo test` runs the same soak for 2 minutes.
set -euo pipefail
MINUTES=${1:-10}
case $MINUTES in ''|*[!0-9]*) echo "usage: soak.sh [minutes]" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
    echo "soak.sh: must run as root (network namespaces)" >&2
    exit 1
fi
command -v nft >/dev/null || { echo "soak.sh: nft missing (scripts/ci-deps.sh installs it)" >&2; exit 1; }
cd "$(dirname "$0")/.."
SOAK_SECS=$((MINUTES * 60)) exec cargo test --release --test soak -- --nocapture
