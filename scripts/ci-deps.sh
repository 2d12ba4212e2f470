#!/usr/bin/env bash
# Installs what the namespace tests (tests/lab_selftest.rs, tests/failover_e2e.rs)
# and scripts/bench-failover.sh need on a Debian/Ubuntu CI runner. Run as root.
#   iproute2        ip netns / ip link / ip addr / ip neigh (the lab itself)
#   nftables        nft: the partition scenarios drop heartbeats / all traffic
#   iputils-ping    ping: lab self-test
#   iputils-arping  arping: lab self-test sends a gratuitous ARP by hand
#   socat           bench: the service keepalived fronts
#   keepalived      bench: the comparison
#   tcpdump, curl   debugging a failing lab by hand
#   python3         bench: the connect prober
#   curl, openssl   handler tests: curl as HTTP/SOCKS client, openssl s_client as TLS client
#   pebble          tests/acme_pebble.rs: pebble (ACME server) and pebble-challtestsrv (its DNS)
#   tinyproxy, dante-server  tests/chains.rs: Debian's HTTP and SOCKS5 proxies as chain hops
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then
    echo "ci-deps.sh: must run as root (the tests create network namespaces)" >&2
    exit 1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    iproute2 nftables iputils-ping iputils-arping socat tcpdump keepalived curl openssl python3 pebble \
    tinyproxy dante-server \
    >/dev/null
for tool in ip nft ping arping socat keepalived python3 curl openssl ss pebble pebble-challtestsrv tinyproxy danted; do
    command -v "$tool" >/dev/null || { echo "ci-deps.sh: $tool missing after install" >&2; exit 1; }
done
echo "ci-deps.sh: ok"
