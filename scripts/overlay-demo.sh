#!/usr/bin/env bash
# Multi-host overlay demo: two "hosts" on one underlay, etcd as the cluster store, one
# `tether overlay agent` per host, and a real container on each host (`tether run --net demo`,
# a busybox-static root filesystem) talking to the other across VXLAN. Everything lives in a
# throwaway namespace tree (your real network is never touched) and is removed at the end:
#
#   switch (netns): bridge ul 192.168.90.1/24, etcd on 192.168.90.1:2379
#     ├─ host1 (netns): eth0 192.168.90.11 · agent · tvx-100 · tob-100 ─ c1 (tether run --net demo)
#     └─ host2 (netns): eth0 192.168.90.12 · agent · tvx-100 · tob-100 ─ c2 (tether run --net demo)
#
# Each host has its own tether state (--root, --config-dir) and overlay state (TETHER_OVERLAY_DIR):
# the `overlay` CNI plugin finds its host's agent through that directory alone.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must run as root (it installs Debian packages and creates network namespaces); as a user with sudo: sudo $0${*:+ $*}" >&2
    exit 1
fi
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--inside" ]; then
    scripts/setup.sh
    cargo build -p tether -p tether-overlay -p tether-bridge -p host-local -p tether-loopback
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

# --- from here on we are in a throwaway namespace with a private /run ---
tether="$PWD/target/debug/tether"
mount -t tmpfs tmpfs /run
mkdir -p /run/demo
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
pids=()
containers=()
cleanup() {
    # Containers first (their cgroups live in the real /sys/fs/cgroup), then agents and etcd.
    for c in "${containers[@]}"; do t "${c%%:*}" rm -f "${c#*:}" >/dev/null 2>&1 || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

step "The underlay: a switch namespace with bridge ul, two host namespaces plugged into it"
ip netns add switch
ip -n switch link add ul type bridge
ip -n switch addr add 192.168.90.1/24 dev ul
ip -n switch link set ul up
ip -n switch link set lo up
for i in 1 2; do
    ip netns add "host$i"
    ip -n switch link add "p$i" type veth peer name eth0 netns "host$i"
    ip -n switch link set "p$i" master ul up
    ip -n "host$i" addr add "192.168.90.1$i/24" dev eth0
    ip -n "host$i" link set eth0 up
    ip -n "host$i" link set lo up
done

step "etcd (Debian etcd-server), listening on the underlay only: http://192.168.90.1:2379"
url=http://192.168.90.1:2379
ip netns exec switch etcd --name demo --data-dir /run/demo/etcd \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls http://192.168.90.1:2380 --initial-advertise-peer-urls http://192.168.90.1:2380 \
    --initial-cluster demo=http://192.168.90.1:2380 2>/run/demo/etcd.log &
pids+=($!)
for _ in $(seq 50); do
    ETCDCTL_API=3 ip netns exec switch etcdctl --endpoints "$url" --dial-timeout 1s endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done

step "tether overlay init demo --etcd $url --subnet 10.250.0.0/16 --vni 100"
ip netns exec host1 "$tether" overlay init demo --etcd "$url" --subnet 10.250.0.0/16 --vni 100

step "tether overlay agent demo --etcd $url --iface eth0, on each host"
for i in 1 2; do
    TETHER_OVERLAY_DIR="/run/demo/host$i" ip netns exec "host$i" \
        "$tether" overlay agent demo --etcd "$url" --iface eth0 --lease-ttl 10 2>"/run/demo/agent$i.log" &
    pids+=($!)
done
field() { sed -n "s/.*\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "/run/demo/host$1/demo/lease.json"; }
for i in 1 2; do
    for _ in $(seq 100); do [ -f "/run/demo/host$i/demo/lease.json" ] && break; sleep 0.1; done
    echo "host$i lease.json:"; sed "s/^/    /" "/run/demo/host$i/demo/lease.json"; echo
done

step "tether network create demo --driver overlay, on each host (writes the host's conflist)"
# nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup tree tether needs.
on() { local i=$1; shift; TETHER_OVERLAY_DIR="/run/demo/host$i" nsenter --net="/run/netns/host$i" "$@"; }
t() { local i=$1; shift; on "$i" "$tether" --root "/run/demo/host$i/tether" --config-dir "/run/demo/host$i/net.d" "$@"; }
for i in 1 2; do
    t "$i" network create demo --driver overlay
    sed "s/^/    /" "/run/demo/host$i/net.d/demo.conflist"
done

step "A busybox-static root filesystem for the containers"
rootfs=/run/demo/rootfs
mkdir -p "$rootfs/bin" "$rootfs/www"
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh ping wget httpd sleep ip echo cat; do ln -s busybox "$rootfs/bin/$a"; done
echo "hello from c2 on host2" >"$rootfs/www/index.html"

step "tether run --net demo: c2 (a web server) on host2, c1 on host1"
t 2 run -d --name c2 --net demo --rootfs "$rootfs" -- httpd -f -p 80 -h /www
containers+=(2:c2)
t 1 run -d --name c1 --net demo --rootfs "$rootfs" -- sleep 600
containers+=(1:c1)
addr() { t "$1" inspect "$2" | sed -n 's/.*"address": *"\([0-9.]*\)\/.*/\1/p' | head -1; }
c1_ip=$(addr 1 c1); c2_ip=$(addr 2 c2)
echo "c1: $c1_ip on host1 ($(field 1 subnet)), c2: $c2_ip on host2 ($(field 2 subnet))"

step "tether network inspect demo on host1: its host subnet and the peer"
t 1 network inspect demo | sed -n '/^  "overlay": {/,/^  }/p' | sed 's/^/    /'

step "What the agent on host1 programmed for host2 (neighbour, FDB entry, route)"
ip -n host1 -d link show tvx-100 | sed -n '1,3p'
ip -n host1 neigh show dev tvx-100
bridge -n host1 fdb show dev tvx-100
ip -n host1 route show dev tvx-100

step "c1 (host1) → c2 (host2): ping, then HTTP; and back"
t 1 exec c1 -- ping -c2 -W2 "$c2_ip"
t 1 exec c1 -- wget -qO- "http://$c2_ip/"
t 2 exec c2 -- ping -c1 -W2 "$c1_ip" | grep -E 'bytes from|loss'

step "A 1400-byte ping with DF set passes; a 1423-byte one (1451 on the wire) exceeds the MTU 1450"
c1_pid=$(t 1 inspect c1 | grep -o '"pid": *[0-9][0-9]*' | head -1 | grep -o '[0-9]*$')
nsenter --net="/proc/$c1_pid/ns/net" ping -c1 -W2 -M do -s 1400 "$c2_ip" | grep -E 'bytes from|loss'
nsenter --net="/proc/$c1_pid/ns/net" ping -c1 -W2 -M do -s 1423 "$c2_ip" 2>&1 | grep -iE 'too long|mtu' || true

step "Keys in etcd"
ETCDCTL_API=3 ip netns exec switch etcdctl --endpoints "$url" get --prefix /tether/overlay/ | sed 's/^/    /'

step "tether rm -f, network rm, then SIGTERM both agents: leases revoked, devices removed"
for c in "${containers[@]}"; do t "${c%%:*}" rm -f "${c#*:}" >/dev/null; done
containers=()
for i in 1 2; do t "$i" network rm demo; done
kill -TERM "${pids[1]}" "${pids[2]}"
wait "${pids[1]}" "${pids[2]}" || true
tail -n 2 /run/demo/agent1.log
echo "devices left (vxlan, bridge, veth): $(for i in 1 2; do ip -n "host$i" -br link show type vxlan; ip -n "host$i" -br link show type bridge; ip -n "host$i" -br link show type veth | grep -v '^eth0'; done | grep -c . || true)"
echo "overlay routes left: $(for i in 1 2; do ip -n "host$i" route show table all; done | grep -c '10\.250\.' || true)"
echo "permanent neighbours left: $(for i in 1 2; do ip -n "host$i" neigh show nud permanent; done | grep -c . || true)"
echo "masquerade chains left: $(for i in 1 2; do ip netns exec "host$i" iptables-save -t nat; done | grep -c 'TETHER-MASQ-' || true)"
echo "subnet keys left: $(ETCDCTL_API=3 ip netns exec switch etcdctl --endpoints "$url" get --prefix --keys-only /tether/overlay/demo/subnets/ | grep -c . || true)"
echo "lease, peers and attachment files left: $(find /run/demo/host1/demo /run/demo/host2/demo -name '*.json' | wc -l)"
