#!/usr/bin/env bash
# Build and install gateway with its systemd unit. Run as root from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
install -D -m 0755 target/release/gateway /usr/local/bin/gateway
install -d /etc/gateway
[ -f /etc/gateway/gateway.yml ] || install -m 0644 gateway.yml /etc/gateway/gateway.yml
install -D -m 0644 README.md /usr/local/share/doc/gateway/README.md
if [ -d /etc/systemd/system ]; then
  install -m 0644 scripts/gateway.service /etc/systemd/system/gateway.service
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "installed: systemctl enable --now gateway"
  fi
fi
/usr/local/bin/gateway -test -config /etc/gateway/gateway.yml
