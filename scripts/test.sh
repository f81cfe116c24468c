#!/usr/bin/env bash
# The whole test suite: installs dependencies, checks formatting and lints, builds every plugin
# binary, runs every test. Tests make their own throwaway network namespaces; the host's real
# network is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The habits are enforced, not hoped for: unformatted code or a clippy warning fails the run
# before any test starts.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests exec the plugin binaries from target/debug, so build them all first.
cargo build --workspace --bins
cargo test --workspace "$@"
