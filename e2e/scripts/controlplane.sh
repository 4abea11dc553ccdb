#!/usr/bin/env bash
# controlplane.sh up|down DIR — a real etcd + kube-apiserver + kube-controller-manager on
# loopback, with their own PKI and an admin kubeconfig (DIR/admin.kubeconfig). `up` builds
# the binaries when missing (build-controlplane.sh), starts the three processes, records their
# PIDs in DIR/*.pid and waits for /readyz. `down` stops exactly those PIDs.
set -euo pipefail
cmd=${1:?usage: controlplane.sh up|down DIR}
DIR=${2:?usage: controlplane.sh up|down DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
ETCD_PORT=${ETCD_PORT:-23790}
API_PORT=${API_PORT:-16443}
# The Service range: a /24 holds the e2e's Services; the operator bench (2,000) sets a /16.
SERVICE_CIDR=${SERVICE_CIDR:-10.0.0.0/24}
# The controllers kube-controller-manager runs (the operator bench leaves out the claim
# binder: see operator/bench/operator_bench.py).
KCM_CONTROLLERS=${KCM_CONTROLLERS:-*}
log() { printf '[controlplane] %s\n' "$*" >&2; }

stop_all() {
    for name in kube-controller-manager kube-apiserver etcd; do
        pidfile="$DIR/$name.pid"
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$pidfile"
    done
}

if [ "$cmd" = down ]; then
    stop_all
    log "stopped"
    exit 0
fi
[ "$cmd" = up ] || { echo "usage: controlplane.sh up|down DIR" >&2; exit 2; }

BIN=$("$HERE/build-controlplane.sh")
mkdir -p "$DIR/pki" "$DIR/etcd"
cd "$DIR/pki"
if [ ! -f ca.crt ]; then
    log "creating PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=zeronas-e2e-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/CN=admin/O=system:masters" 2>/dev/null
    # An extension makes it an X.509 v3 certificate: rustls (kube-rs) refuses v1 ones.
    printf 'extendedKeyUsage=clientAuth\n' > admin.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile admin.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi
cat > "$DIR/admin.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: { server: "https://127.0.0.1:$API_PORT", certificate-authority: "$DIR/pki/ca.crt" }
users:
- name: admin
  user: { client-certificate: "$DIR/pki/admin.crt", client-key: "$DIR/pki/admin.key" }
contexts:
- name: e2e
  context: { cluster: e2e, user: admin, namespace: default }
current-context: e2e
KC

start() { # start NAME ARGS...
    local name=$1; shift
    "$@" > "$DIR/$name.log" 2>&1 &
    echo $! > "$DIR/$name.pid"
    log "$name pid $(cat "$DIR/$name.pid"), log $DIR/$name.log"
}
start etcd "$BIN/etcd" --data-dir "$DIR/etcd" --name default \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 10))" --unsafe-no-fsync
start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$DIR/pki/sa.pub" \
    --service-account-signing-key-file "$DIR/pki/sa.key" --service-cluster-ip-range "$SERVICE_CIDR" \
    --endpoint-reconciler-type none
start_time=$SECONDS
until curl -sf --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" > /dev/null; do
    if ! kill -0 "$(cat "$DIR/kube-apiserver.pid")" 2>/dev/null || [ $((SECONDS - start_time)) -gt 120 ]; then
        log "kube-apiserver did not become ready; last log lines:"; tail -20 "$DIR/kube-apiserver.log" >&2
        stop_all; exit 1
    fi
    sleep 0.5
done
log "kube-apiserver ready in $((SECONDS - start_time)) s"
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$DIR/admin.kubeconfig" \
    --leader-elect=false --controllers "$KCM_CONTROLLERS" --service-account-private-key-file "$DIR/pki/sa.key" \
    --root-ca-file "$DIR/pki/ca.crt" --bind-address 127.0.0.1 --secure-port 0 \
    --use-service-account-credentials=false
echo "$DIR/admin.kubeconfig"
