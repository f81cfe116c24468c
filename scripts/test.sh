#!/usr/bin/env bash
# The whole test suite: installs dependencies, checks formatting and lints, builds every plugin
# binary, runs every test. Tests make their own throwaway network namespaces; the host's real
# network is never touched.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must run as root (it installs Debian packages and creates network namespaces); as a user with sudo: sudo $0${*:+ $*}" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
scripts/setup.sh
# A one-shot CI build gains nothing from incremental compilation and its cache takes gigabytes of
# the machine's disk; a developer's repeated runs keep it.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi
# The habits are enforced, not hoped for: unformatted code or a clippy warning fails the run
# before any test starts.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests exec the plugin binaries from target/debug, so build them all first.
cargo build --workspace --bins
cargo test --workspace "$@"
