#!/usr/bin/env bash
# Quick start: a container on Tether's default bridge network, end to end, in a throwaway host
# network namespace (your real network is never touched).
#
#  - builds Tether and installs its Debian dependencies (run as root),
#  - makes a private "host" (new net + mount namespace, private /run) and an "outside" namespace
#    behind it that stands for the internet,
#  - runs a web server container on the default network (bridge tether0, 10.88.0.0/16, NAT),
#  - from a second container: pings the gateway, fetches from the first container across the bridge,
#    and fetches from the outside, which sees the host's address as the source (MASQUERADE),
#  - removes everything and shows that nothing was left behind.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must run as root (it installs Debian packages and creates network namespaces); as a user with sudo: sudo $0${*:+ $*}" >&2
    exit 1
fi
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--inside" ]; then
    scripts/setup.sh
    cargo build --release --workspace --bins
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

# --- from here on we are in the throwaway host namespace ---
bin="$PWD/target/release"
export PATH="$bin:$PATH"
mount -t tmpfs tmpfs /run                 # private /run: tether state, netns mounts, locks
mount -t tmpfs tmpfs /var/lib/cni 2>/dev/null || { mkdir -p /var/lib/cni && mount -t tmpfs tmpfs /var/lib/cni; }
ip link set lo up
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "An 'outside' network namespace, reachable from this host through 198.51.100.0/24"
ip netns add outside
ip link add uplink type veth peer name wan netns outside
ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
ip -n outside addr add 198.51.100.2/24 dev wan && ip -n outside link set wan up && ip -n outside link set lo up
ip route add default via 198.51.100.2
mkdir -p /run/outside-www && echo "hello from the outside" > /run/outside-www/index.html
ip netns exec outside busybox httpd -f -v -p 8080 -h /run/outside-www 2>/run/outside-httpd.log &
outside_httpd=$!

step "tether run -d --name web: a web server container on the default bridge network"
mkdir -p /run/www && echo "hello from container web" > /run/www/index.html
tether run -d --name web -- busybox httpd -f -p 80 -h /run/www
web_ip=$(tether inspect web | sed -n 's/.*"address": *"\([0-9.]*\)\/.*/\1/p' | head -1)
web_id=$(tether inspect web | grep -o '"id": *"[0-9a-f]\{64\}"' | head -1 | grep -o '[0-9a-f]\{64\}')
[ -n "$web_id" ] || { echo "no container id in tether inspect web" >&2; exit 1; }
echo "web has address $web_ip"

step "tether run --rm: a second container talks to the gateway, to web, and to the outside"
tether run --rm --name client -- sh -c "
  ip -4 -o addr show eth0
  ping -c1 -W2 10.88.0.1 | grep -E 'bytes from|loss'
  echo -n 'from web: ';     wget -qO- http://$web_ip/
  echo -n 'from outside: '; wget -qO- http://198.51.100.2:8080/
"
sleep 0.2
echo "the outside saw the request come from: $(grep -o '198\.51\.100\.[0-9]*' /run/outside-httpd.log | sort -u | tr '\n' ' ')(the host's address: NAT)"

step "Host state while web runs: bridge, veth, NAT rules"
ip -br link show type bridge
ip -br link show type veth | grep -v uplink || true
iptables -t nat -S POSTROUTING | grep -i tether || true

step "tether rm -f web: everything of the container goes away"
tether rm -f web
kill "$outside_httpd" 2>/dev/null || true
echo "veths left: $(ip -br link show type veth | grep -vc uplink || true)"
# The network's masquerade chain (TETHER-MASQ-*) is shared and stays, like the bridge.
echo "NAT rules left for containers: $(iptables -t nat -S | grep 'TETHER-' | grep -c "$web_id" || true)"
echo "leases left: $(find /var/lib/cni /run/tether -type f -path '*networks*' ! -name lock ! -name 'last_reserved_ip*' 2>/dev/null | wc -l)"
