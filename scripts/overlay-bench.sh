#!/usr/bin/env bash
# The overlay benchmark: cross-host TCP throughput (iperf3) between containers over the agent's
# VXLAN overlay against the same VXLAN configured by hand with `ip`, and convergence time (agent
# start → every other host's first ping of its container) with 3 and 20 hosts. Everything runs in
# throwaway namespaces (runtime/overlay/examples/overlay_bench.rs); prints a table of figures.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must run as root (it creates network namespaces); as a user with sudo: sudo $0${*:+ $*}" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -p tether -p tether-overlay-agent --bins --example overlay_bench
exec target/debug/examples/overlay_bench
