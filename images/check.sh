#!/usr/bin/env bash
# check.sh: tests the images `make images` built (target/images/images.json): each image's
# config (user, entrypoint, labels, platform, one layer, no shell), then its root file
# system unpacked from the layer: the dataplane serves a folder over HTTP and NFS as the
# image's user (65532, squash identity) and starts as root with posix identity; the
# operator renders a NasVolume; the CSI driver serves its socket. Needs root (chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/images
[ -s "$OUT/images.json" ] || { echo "check.sh: run make images first" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

for name in operator dataplane csi; do
  layout=$OUT/$name
  # Config checks and the layer to unpack, read straight from the OCI layout.
  if layer=$(python3 - "$layout" "$name" <<'PY'
import json, os, sys
layout, name = sys.argv[1:]
blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
index = json.load(open(os.path.join(layout, "index.json")))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))
c = config["config"]
problems = []
def want(what, got, expected):
    if got != expected:
        problems.append(f"{what}: {got!r}, want {expected!r}")
want("user", c.get("User"), "65532:65532")
want("entrypoint", c.get("Entrypoint"), [f"/usr/local/bin/zeronas-{name}"])
want("os/architecture", (config.get("os"), config.get("architecture")), ("linux", "amd64"))
want("layers", len(manifest["layers"]), 1)
labels = c.get("Labels") or {}
for key in ["title", "description", "version", "revision", "created", "source", "licenses"]:
    if not labels.get(f"org.opencontainers.image.{key}"):
        problems.append(f"label org.opencontainers.image.{key} missing")
want("title label", labels.get("org.opencontainers.image.title"), f"zeronas-{name}")
want("ref name", index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
     labels.get("org.opencontainers.image.version"))
if problems:
    print("; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(blob(manifest["layers"][0]["digest"]))
PY
  ); then ok "$name: config (user 65532:65532, entrypoint, OCI labels, linux/amd64, one layer)"; else fail "$name: config"; continue; fi
  root=$work/$name
  mkdir -p "$root"
  tar -xzf "$layer" -C "$root"
  if foreign=$(tar -tvzf "$layer" | awk '$2 != "0/0"' | head -3) && [ -z "$foreign" ]; then
    ok "$name: every file in the layer belongs to 0:0"
  else
    fail "$name: layer entries not owned by 0:0: $foreign"
  fi
  if [ ! -e "$root/bin/sh" ] && [ ! -e "$root/usr/bin/sh" ] && [ -x "$root/usr/local/bin/zeronas-$name" ]; then
    ok "$name: root file system holds the binary and no shell ($(du -sh "$root" | cut -f1))"
  else
    fail "$name: root file system"
  fi
done

# The dataplane from its image's root file system, as the image's user (squash identity).
root=$work/dataplane
if [ -d "$root/usr" ]; then
  mkdir -p "$root/data"
  chown 65532:65532 "$root/data"
  chroot --userspec=65532:65532 "$root" /usr/local/bin/zeronas-dataplane --root /data \
    --http 127.0.0.1:0 --nfs 127.0.0.1:0 --identity squash > "$work/dp.out" 2> "$work/dp.err" &
  pids+=($!)
  for _ in $(seq 50); do [ -s "$work/dp.out" ] && break; sleep 0.1; done
  line=$(head -n1 "$work/dp.out")
  http=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["http"])' 2>/dev/null || true)
  nfs=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nfs"])' 2>/dev/null || true)
  if [ -n "$http" ]; then
    head -c 200000 /dev/urandom > "$work/payload"
    curl -sf -T "$work/payload" "http://$http/v1/shares/default/files/from-image.bin" > /dev/null &&
      curl -sf "http://$http/v1/shares/default/files/from-image.bin" -o "$work/back" &&
      cmp -s "$work/payload" "$work/back" &&
      [ "$(stat -c %u "$root/data/from-image.bin")" = 65532 ] &&
      ok "dataplane: serves HTTP from the image as uid 65532 (200 kB round trip, file owned by 65532)" ||
      fail "dataplane: HTTP round trip from the image"
    port=${nfs##*:}
    nfs-ls "nfs://127.0.0.1/?version=3&nfsport=$port&mountport=$port" 2>&1 | grep -q from-image.bin &&
      ok "dataplane: NFS listing from the image (libnfs)" || fail "dataplane: NFS from the image"
  else
    fail "dataplane: did not start from the image: $(cat "$work/dp.err")"
  fi
  kill "${pids[-1]}" 2>/dev/null || true
  chroot "$root" /usr/local/bin/zeronas-dataplane --root /data --http 127.0.0.1:0 --nfs off \
    --identity posix > "$work/dp2.out" 2> "$work/dp2.err" &
  pids+=($!)
  for _ in $(seq 50); do [ -s "$work/dp2.out" ] && break; sleep 0.1; done
  grep -q '"identity":"posix"' "$work/dp2.out" &&
    ok "dataplane: starts from the image as uid 0 with posix identity" ||
    fail "dataplane: posix start from the image: $(cat "$work/dp2.err")"
  kill "${pids[-1]}" 2>/dev/null || true
fi

# The operator from its image: render needs no cluster.
root=$work/operator
if [ -d "$root/usr" ]; then
  chroot --userspec=65532:65532 "$root" /usr/local/bin/zeronas-operator render -f - \
    < crds/samples/basic.yaml > "$work/render.yaml" 2> "$work/render.err" &&
    grep -q "kind: Deployment" "$work/render.yaml" &&
    ok "operator: render runs from the image as uid 65532" ||
    fail "operator: render from the image: $(cat "$work/render.err")"
fi
# The CSI driver from its image: the node plugin as the chart's DaemonSet runs it (uid 0, a
# root-owned plugin folder) serves its socket, a stale socket file left by a killed
# predecessor does not stop it; the controller as the image's user says what it lacks
# without a cluster (e2e runs it against one).
root=$work/csi
if [ -d "$root/usr" ]; then
  mkdir -p "$root/csi" && : > "$root/csi/csi.sock"
  chroot --userspec=0:0 "$root" /usr/local/bin/zeronas-csi --mode node --node-id n1 \
    --endpoint unix:///csi/csi.sock > "$work/csi.out" 2> "$work/csi.err" &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$root/csi/csi.sock" ] && break; sleep 0.1; done
  [ -S "$root/csi/csi.sock" ] &&
    ok "csi: the node plugin serves its socket from the image as uid 0, replacing a stale one" ||
    fail "csi: node plugin from the image: $(cat "$work/csi.err")"
  if chroot --userspec=65532:65532 "$root" /usr/local/bin/zeronas-csi --mode controller \
      --kubeconfig /nonexistent --endpoint unix:///tmp/c.sock 2> "$work/csi-c.err"; then
    fail "csi: the controller started without a cluster"
  else
    grep -q "/nonexistent" "$work/csi-c.err" &&
      ok "csi: the controller runs from the image as uid 65532 and names the missing kubeconfig" ||
      fail "csi: controller from the image: $(cat "$work/csi-c.err")"
  fi
fi
echo "images: $passed passed, $failed failed"
[ "$failed" = 0 ]
