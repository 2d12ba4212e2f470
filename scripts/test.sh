#!/usr/bin/env bash
# The test command of README.md and .ci/run: formatting, lints, then every test.
# Hygiene is held by CI, not by memory: a file rustfmt would change or a clippy
# warning fails the run like a failing test does.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --release
