#!/usr/bin/env bash
# Builds the upstream CSI tools the tests run against the zeronas-csi driver, from their Go
# modules (no release downloads exist here), into a cache outside the repository, once per
# version: ${ZERONAS_E2E_CACHE:-~/.cache/zeronas-e2e}/csi/bin
#   csi-sanity            the CSI conformance suite (github.com/kubernetes-csi/csi-test/v5)
#   csi-provisioner       external-provisioner (PVC -> CreateVolume/DeleteVolume)
#   csi-resizer           external-resizer (PVC growth -> ControllerExpandVolume)
# Prints the bin folder on stdout; build logs and timings go to stderr.
set -euo pipefail

CSI_TEST_VERSION=${CSI_TEST_VERSION:-v5.6.0}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v6.4.0}
RESIZER_VERSION=${RESIZER_VERSION:-v1.14.0}
CACHE=${ZERONAS_E2E_CACHE:-$HOME/.cache/zeronas-e2e}
BIN="$CACHE/csi/bin"
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-csi-tools] %s\n' "$*" >&2; }
mkdir -p "$BIN"

# build NAME MODULE VERSION PACKAGE: modules whose go.mod carries replace directives cannot be
# `go install`ed, so the build runs in a writable copy of the downloaded module.
build() {
    local name=$1 module=$2 version=$3 package=$4
    local out="$BIN/$name-$version"
    if [ -x "$out" ]; then ln -sf "$(basename "$out")" "$BIN/$name"; return; fi
    local start=$SECONDS work dir
    work=$(mktemp -d "$CACHE/csi-build.XXXXXX")
    log "downloading $module@$version"
    dir=$(cd "$work" && "$GO" mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    cp -r "$dir" "$work/src" && chmod -R u+w "$work/src"
    log "building $name"
    (cd "$work/src" && "$GO" build -mod=mod -trimpath -ldflags "-s -w -X main.version=$version" -o "$out.tmp" "$package") >&2
    mv "$out.tmp" "$out"
    ln -sf "$(basename "$out")" "$BIN/$name"
    rm -rf "$work"
    log "$name $version built in $((SECONDS - start)) s"
}

build csi-sanity github.com/kubernetes-csi/csi-test/v5 "$CSI_TEST_VERSION" ./cmd/csi-sanity
build csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" ./cmd/csi-provisioner
build csi-resizer github.com/kubernetes-csi/external-resizer "$RESIZER_VERSION" ./cmd/csi-resizer
echo "$BIN"
