#!/usr/bin/env bash
# Type-check the whole crate (library, binary, tests) for macOS from Linux, with
# clippy's warnings as errors:
#
#   scripts/check-macos.sh            # x86_64-apple-darwin
#   TARGET=aarch64-apple-darwin scripts/check-macos.sh
#
# The macOS code paths (ifconfig(8) for the VIP, getifaddrs(3) polling instead of
# rtnetlink, IP_BOUND_IF for the heartbeat socket) cannot run here, but they must
# keep compiling. Nothing is linked: C dependencies (ring) only need their build
# scripts to pass, so a stand-in compiler writes empty objects; the one real call,
# cc-rs asking the preprocessor which compiler family it has, goes to the host cc.
# Needs rustup's rust-std for the target (installed here on first use).
set -euo pipefail
TARGET=${TARGET:-x86_64-apple-darwin}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
STUB=$(mktemp -d)
trap 'rm -rf "$STUB"' EXIT
cat >"$STUB/cc" <<'SH'
#!/bin/sh
case " $* " in *" -E "*) exec cc "$@" ;; esac
out=
while [ $# -gt 0 ]; do
    # -o FILE (gcc/clang style) or -FoFILE (what cc-rs says when it takes the host
    # preprocessor's silence for MSVC)
    case "$1" in -o) out=$2; shift ;; -Fo*) out=${1#-Fo} ;; esac
    shift
done
[ -n "$out" ] && : >"$out"
exit 0
SH
chmod +x "$STUB/cc"
var=$(echo "$TARGET" | tr - _)
export "CC_$var=$STUB/cc" "AR_$var=ar"
cd "$ROOT"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/check-$TARGET} \
    cargo clippy --target "$TARGET" --all-targets -- -D warnings
echo "check-macos: $TARGET type-checks clean"
