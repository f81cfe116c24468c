#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds every plugin binary, runs every test.
# Tests make their own throwaway network namespaces; the host's real network is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Integration tests exec the plugin binaries from target/debug, so build them all first.
cargo build --workspace --bins
cargo test --workspace "$@"
