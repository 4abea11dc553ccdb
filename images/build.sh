#!/usr/bin/env bash
# build.sh: `make images`. Builds the release binaries, then one OCI image layout per binary
# in target/images/<name> (tag = the crate version), from a minimal root file system
# (rootfs.sh), with umoci (unpacking and repacking a bundle; rootless when not root), pulling
# nothing from any registry. Prints each image's digest and
# sizes and writes them to target/images/images.json. Push with
#   skopeo copy oci:target/images/dataplane:VERSION docker://ghcr.io/zeronas/dataplane:VERSION
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
OUT=target/images
VERSION=${VERSION:-$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then REVISION="$REVISION-dirty"; fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
SOURCE=${IMAGE_SOURCE:-https://github.com/zeronas/zeronas}
ROOTLESS=$( [ "$(id -u)" = 0 ] || echo --rootless )

started=$(date +%s)
$CARGO build --release --locked -p zeronas-dataplane -p zeronas-operator -p zeronas-csi
echo "images: release build $(( $(date +%s) - started )) s"

mkdir -p "$OUT"
summary="["
for name in operator dataplane csi; do
  case $name in
    operator) description="zeronas operator: reconciles NasVolumes into dataplane pods, Services and PV/PVC pairs" ;;
    dataplane) description="zeronas dataplane: serves one volume over NFSv3 and an HTTP file API with zero-copy paths" ;;
    csi) description="zeronas CSI driver: PersistentVolumeClaims become NasVolumes, mounted over NFSv3 on the nodes" ;;
  esac
  rootfs=$OUT/rootfs-$name layout=$OUT/$name
  images/rootfs.sh "target/release/zeronas-$name" "$rootfs"
  # Debug sections stay in target/; symbol names stay for backtraces.
  strip --strip-debug "$rootfs/usr/local/bin/zeronas-$name"
  touch -h -d "@$SOURCE_DATE_EPOCH" "$rootfs/usr/local/bin/zeronas-$name"
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$VERSION"
  # unpack + repack (umoci 0.4's `insert` of a whole tree at / writes a truncated layer).
  # As root the files keep their owner (root); otherwise --rootless maps this user to root
  # in the layer (repack reads that mapping from the bundle), so a release runner's uid never
  # ends up in the image.
  bundle=$OUT/bundle-$name
  rm -rf "$bundle"
  umoci unpack $ROOTLESS --image "$layout:$VERSION" "$bundle"
  cp -a "$rootfs/." "$bundle/rootfs/"
  umoci repack --image "$layout:$VERSION" --history.created "$CREATED" --history.author zeronas \
    --history.created_by "images/rootfs.sh target/release/zeronas-$name" "$bundle"
  rm -rf "$bundle"
  # The image's user is non-root; the operator gives a Posix-mode dataplane pod
  # runAsUser 0 and its six capabilities explicitly (see the README's identity model).
  umoci config --no-history --image "$layout:$VERSION" \
    --os linux --architecture amd64 --created "$CREATED" --author zeronas \
    --config.user 65532:65532 --config.workingdir / \
    --config.entrypoint "/usr/local/bin/zeronas-$name" \
    --config.label "org.opencontainers.image.title=zeronas-$name" \
    --config.label "org.opencontainers.image.description=$description" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.revision=$REVISION" \
    --config.label "org.opencontainers.image.created=$CREATED" \
    --config.label "org.opencontainers.image.source=$SOURCE" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "org.opencontainers.image.vendor=zeronas"
  umoci gc --layout "$layout"
  line=$(python3 - "$layout" "$rootfs" "$name" "$VERSION" <<'PY'
import json, os, sys
layout, rootfs, name, version = sys.argv[1:]
index = json.load(open(os.path.join(layout, "index.json")))
entry = index["manifests"][0]
blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
manifest = json.load(open(blob(entry["digest"])))
compressed = entry["size"] + manifest["config"]["size"] + sum(l["size"] for l in manifest["layers"])
unpacked = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(rootfs) for f in fs)
print(json.dumps({"name": name, "version": version, "digest": entry["digest"],
                  "compressed_bytes": compressed, "unpacked_bytes": unpacked,
                  "layout": layout}))
PY
)
  echo "$line" | python3 -c 'import json,sys; i=json.load(sys.stdin); print("image zeronas-%s:%s %s  %.1f MiB compressed, %.1f MiB unpacked  (oci:%s:%s)" % (i["name"], i["version"], i["digest"], i["compressed_bytes"]/2**20, i["unpacked_bytes"]/2**20, i["layout"], i["version"]))'
  summary="$summary$line,"
done
echo "${summary%,}]" > "$OUT/images.json"
echo "images: done in $(( $(date +%s) - started )) s"
