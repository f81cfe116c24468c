#!/usr/bin/env bash
# Installs what Tether's build, demo and tests need on a fresh Debian machine (run as root).
# Idempotent: skips apt when everything is already there.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must run as root (it installs Debian packages); as a user with sudo: sudo $0${*:+ $*}" >&2
    exit 1
fi

packages=(iptables nftables iproute2 iputils-ping busybox-static containernetworking-plugins podman procps util-linux
          containerd golang-go golang-github-appc-cni-dev
          etcd-server etcd-client protobuf-compiler iperf3)
# dnsname's tests query with dig; tests/dns-bench measures tether-dns against the other two.
packages+=(dnsutils dnsmasq-base aardvark-dns)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Tether needs Rust 1.85 or newer: install it with rustup (https://rustup.rs)" >&2
    exit 1
fi

# scripts/test.sh runs `cargo fmt --check` and `cargo clippy` before the tests.
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "setup: cargo $tool not found: add it with 'rustup component add rustfmt clippy'" >&2
        exit 1
    fi
done
