#!/usr/bin/env bash
# Images benchmark (README "Images"): container start from an image vs --rootfs, import of a
# ~200 MB image vs `tar -x` of the same layer, disk used by 10 containers of one image.
#
#   cargo build --release -p tether && sudo scripts/bench-images.sh [TETHER] [RUNS]
#
# Everything lives in a temp dir (own --root and --image-root); containers use --net=none, so
# the host network is never touched. Needs root and busybox-static.
set -euo pipefail
TETHER=${1:-target/release/tether}
RUNS=${2:-21}
TETHER=$(realpath "$TETHER")
W=$(mktemp -d /var/tmp/tether-bench-images.XXXXXX)
trap 'for c in $("$TETHER" ps -aq 2>/dev/null); do "$TETHER" rm -f "$c" >/dev/null 2>&1 || true; done; rm -rf "$W"' EXIT
export CNI_PATH=${CNI_PATH:-$(dirname "$TETHER"):$PWD/target/debug}
export TETHER_ROOT=$W/root TETHER_IMAGE_ROOT=$W/images TETHER_CONFIG=$W/none.json
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b - a) / 1000000}'; }
calc() { awk "BEGIN {printf \"%.2f\", $1}"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# A ~200 MB rootfs: busybox plus 200 files of 1 MiB (incompressible).
R=$W/rootfs
mkdir -p "$R/bin" "$R/data" "$R/etc"
cp /bin/busybox "$R/bin/busybox"
for a in sh true cat dd sleep; do ln -s busybox "$R/bin/$a"; done
for i in $(seq 1 200); do head -c 1048576 /dev/urandom > "$R/data/f$i"; done
tar -C "$R" -cf "$W/layer.tar" .
diff_id=sha256:$(sha256sum "$W/layer.tar" | cut -d' ' -f1)
printf '{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["true"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' "$diff_id" > "$W/config.json"
cid=$(sha256sum "$W/config.json" | cut -d' ' -f1)
mkdir -p "$W/arch"
cp "$W/config.json" "$W/arch/$cid.json"
ln "$W/layer.tar" "$W/arch/${diff_id#sha256:}.tar"
printf '[{"Config":"%s.json","RepoTags":["bench:1"],"Layers":["%s.tar"]}]' "$cid" "${diff_id#sha256:}" > "$W/arch/manifest.json"
tar -C "$W/arch" -cf "$W/image.tar" manifest.json "$cid.json" "${diff_id#sha256:}.tar"
size_mb=$(( $(stat -c %s "$W/layer.tar") / 1048576 ))

echo "== import of a ${size_mb} MB image vs tar -x (median of 5, same filesystem, page cache warm)"
imp=(); tx=(); sh=()
for i in 1 2 3 4 5; do
    sync; t0=$(date +%s%N); "$TETHER" image import "$W/image.tar" >/dev/null; t1=$(date +%s%N)
    imp+=("$(ms "$t0" "$t1")")
    "$TETHER" rmi bench:1 >/dev/null; "$TETHER" image prune >/dev/null
    mkdir "$W/x$i"; sync; t0=$(date +%s%N); tar -C "$W/x$i" -xf "$W/layer.tar"; t1=$(date +%s%N)
    tx+=("$(ms "$t0" "$t1")"); rm -rf "$W/x$i"
    t0=$(date +%s%N); sha256sum "$W/layer.tar" >/dev/null; t1=$(date +%s%N); sh+=("$(ms "$t0" "$t1")")
done
mi=$(printf '%s\n' "${imp[@]}" | median); mt=$(printf '%s\n' "${tx[@]}" | median); msh=$(printf '%s\n' "${sh[@]}" | median)
echo "tether image import: ${mi} ms   tar -x: ${mt} ms   ratio: $(calc "$mi / $mt")   (sha256sum of the layer alone: ${msh} ms)"
"$TETHER" image import "$W/image.tar" >/dev/null
# The import's 200 MB of dirty pages would be written back during the start figures.
sync

echo "== start: tether run --rm --net=none (median of $RUNS, after 3 warm-ups)"
for i in 1 2 3; do "$TETHER" run --rm --net=none bench:1 >/dev/null; "$TETHER" run --rm --net=none --rootfs "$R" -- true >/dev/null; done
img=(); dir=()
for i in $(seq 1 "$RUNS"); do
    t0=$(date +%s%N); "$TETHER" run --rm --net=none bench:1; t1=$(date +%s%N); img+=("$(ms "$t0" "$t1")")
    t0=$(date +%s%N); "$TETHER" run --rm --net=none --rootfs "$R" -- true; t1=$(date +%s%N); dir+=("$(ms "$t0" "$t1")")
done
a=$(printf '%s\n' "${img[@]}" | median); b=$(printf '%s\n' "${dir[@]}" | median)
echo "image: ${a} ms   --rootfs: ${b} ms   difference: $(calc "$a - $b") ms"

echo "== disk: 10 containers of the image, each writing 1 MiB"
before=$(du -sk "$W/images" | cut -f1)
for i in $(seq 1 10); do
    "$TETHER" run -d --name "c$i" --net=none bench:1 sh -c 'dd if=/dev/zero of=/mine bs=1M count=1 2>/dev/null; sleep 300' >/dev/null
done
sleep 1
uppers=0
for i in $(seq 1 10); do
    id=$("$TETHER" inspect "c$i" | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p' | head -1)
    uppers=$(( uppers + $(du -sk "$W/root/containers/$id/upper" | cut -f1) ))
done
after=$(du -sk "$W/images" | cut -f1)
echo "image store: $((after / 1024)) MiB (before the containers: $((before / 1024)) MiB)   10 upper dirs: $((uppers / 1024)) MiB   a copy per container would be $((10 * size_mb)) MiB"
