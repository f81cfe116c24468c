#!/usr/bin/env bash
# The overlay benchmark: cross-host TCP throughput (iperf3) between containers over the agent's
# VXLAN overlay against the same VXLAN configured by hand with `ip`, and convergence time (agent
# start → every other host's first ping of its container) with 3 and 20 hosts; every overlay
# container is attached by the real `overlay` CNI plugin. Then, in the same run, ADD on an overlay
# network against ADD on a plain bridge network (plugins/overlay/examples/add_bench.rs, release
# binaries). Everything runs in throwaway namespaces; prints tables of figures.
#
#   sudo scripts/overlay-bench.sh [ADD_N ADD_ROUNDS]     # default 50 5
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must run as root (it creates network namespaces); as a user with sudo: sudo $0${*:+ $*}" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -p tether -p tether-overlay -p tether-bridge -p host-local --bins
cargo build -p tether-overlay-agent --example overlay_bench
cargo build --release -p tether-overlay -p tether-bridge -p host-local --bins --example add_bench
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
target/debug/examples/overlay_bench
target/release/examples/add_bench "${1:-50}" "${2:-5}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
