#!/usr/bin/env bash
# Multi-host overlay demo: two "hosts" on one underlay, etcd as the cluster store, one
# `tether overlay agent` per host, and a container on each host talking to the other across
# VXLAN. Everything lives in a throwaway namespace tree (your real network is never touched):
#
#   switch (netns): bridge ul 192.168.90.1/24, etcd on 192.168.90.1:2379
#     ├─ host1 (netns): eth0 192.168.90.11 · agent · tvx-100 · tob-100 ─ c1 (container netns)
#     └─ host2 (netns): eth0 192.168.90.12 · agent · tvx-100 · tob-100 ─ c2 (container netns)
#
# The containers are attached by hand here (a bridge tob-<vni> carrying the gateway the agent
# wrote to lease.json, and a veth): with the `overlay` CNI plugin, `tether run --net demo` does it.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): must run as root (it installs Debian packages and creates network namespaces); as a user with sudo: sudo $0${*:+ $*}" >&2
    exit 1
fi
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--inside" ]; then
    scripts/setup.sh
    cargo build -p tether
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

# --- from here on we are in a throwaway namespace with a private /run ---
tether="$PWD/target/debug/tether"
mount -t tmpfs tmpfs /run
mkdir -p /run/demo
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
pids=()
cleanup() {
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

step "A container on each host: bridge tob-100 with the lease's gateway, a veth into the container"
for i in 1 2; do
    subnet=$(field "$i" subnet); mtu=$(field "$i" mtu)
    prefix=${subnet#*/}; base=${subnet%/*}; base=${base%.*}
    gw="$base.1"; addr="$base.2"
    ip netns add "c$i"
    ip -n "host$i" link add tob-100 type bridge
    ip -n "host$i" link set tob-100 mtu "$mtu" up
    ip -n "host$i" addr add "$gw/$prefix" dev tob-100
    ip -n "host$i" link add vc0 mtu "$mtu" type veth peer name eth0 netns "c$i"
    ip -n "host$i" link set vc0 master tob-100 up
    ip -n "c$i" link set lo up
    ip -n "c$i" link set eth0 mtu "$mtu" up
    ip -n "c$i" addr add "$addr/$prefix" dev eth0
    ip -n "c$i" route add default via "$gw"
    echo "c$i: $addr/$prefix on host$i (gateway $gw, MTU $mtu)"
    eval "c${i}_ip=$addr"
done

step "What the agent on host1 programmed for host2 (neighbour, FDB entry, route)"
sleep 0.5
ip -n host1 -d link show tvx-100 | sed -n '1,3p'
ip -n host1 neigh show dev tvx-100
bridge -n host1 fdb show dev tvx-100
ip -n host1 route show dev tvx-100

step "c1 (host1) → c2 (host2), and back"
ip netns exec c1 ping -c2 -W2 "$c2_ip"
ip netns exec c2 ping -c1 -W2 "$c1_ip"
step "A 1400-byte ping with DF set passes; a 1450-byte one is too big for the overlay's MTU 1450"
ip netns exec c1 ping -c1 -W2 -M do -s 1400 "$c2_ip" | grep -E 'bytes from|loss'
ip netns exec c1 ping -c1 -W2 -M do -s 1450 "$c2_ip" 2>&1 | grep -iE 'too long|mtu' || true

step "Keys in etcd"
ETCDCTL_API=3 ip netns exec switch etcdctl --endpoints "$url" get --prefix /tether/overlay/ | sed 's/^/    /'

step "SIGTERM both agents: they revoke their leases and remove their devices"
kill -TERM "${pids[1]}" "${pids[2]}"
wait "${pids[1]}" "${pids[2]}" || true
echo "devices left: $(ip -n host1 -br link show type vxlan | wc -l) + $(ip -n host2 -br link show type vxlan | wc -l)"
echo "subnet keys left: $(ETCDCTL_API=3 ip netns exec switch etcdctl --endpoints "$url" get --prefix --keys-only /tether/overlay/demo/subnets/ | grep -c . || true)"
echo "lease files left: $(find /run/demo/host1 /run/demo/host2 -name '*.json' | wc -l)"
tail -n 3 /run/demo/agent1.log
