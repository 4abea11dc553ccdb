#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and etcd from their Go modules (no release
# downloads exist here) into a cache outside the repository, once per version:
#   ${ZERONAS_E2E_CACHE:-~/.cache/zeronas-e2e}/k8s-<version>/bin
# Prints the bin folder on stdout. Build logs and timings go to stderr.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${ZERONAS_E2E_CACHE:-$HOME/.cache/zeronas-e2e}
BIN="$CACHE/k8s-$K8S_VERSION/bin"
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-controlplane] %s\n' "$*" >&2; }
mkdir -p "$BIN"

staging_minor=${K8S_VERSION#v1.}          # 34.4
staging="v0.$staging_minor"               # v0.34.4

if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ]; then
    start=$SECONDS
    work=$(mktemp -d "$CACHE/wrapper.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
    # paths; a wrapper module replaces each with its published version instead.
    gomod=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
        echo "module e2e.invalid/k8s-controlplane"
        echo "go 1.24"
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo "replace ("
        awk '$2=="v0.0.0"{print $1}' "$gomod" | sort -u | while read -r m; do echo "  $m => $m $staging"; done
        echo ")"
    } > go.mod
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n)\n' > tools.go
    log "resolving k8s.io/kubernetes $K8S_VERSION (staging $staging)"
    "$GO" mod tidy >&2
    ldflags="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags="$ldflags -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=${staging_minor%%.*} -X $p.gitTreeState=clean"
    done
    for cmd in kube-apiserver kube-controller-manager; do
        log "building $cmd"
        "$GO" build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd" >&2
    done
    log "kube-apiserver and kube-controller-manager built in $((SECONDS - start)) s"
fi

if [ ! -x "$BIN/etcd" ]; then
    start=$SECONDS
    work=$(mktemp -d "$CACHE/etcd.XXXXXX")
    cd "$work"
    printf 'module e2e.invalid/etcd\ngo 1.24\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
    printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    log "resolving etcd $ETCD_VERSION"
    "$GO" mod tidy >&2
    log "building etcd"
    "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2
    log "etcd built in $((SECONDS - start)) s"
    rm -rf "$work"
fi
echo "$BIN"
