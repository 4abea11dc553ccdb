#!/usr/bin/env bash
# netns.sh CMD... — runs CMD in a network namespace of its own: loopback up, and the pod
# network 10.244.0.0/24 routed as local (any address in it can be bound, like 127.0.0.0/8).
# Pod IPs cannot be loopback addresses (the apiserver refuses them in EndpointSlices), and
# inside this namespace no test packet can reach anything but the namespace itself.
set -euo pipefail
POD_NETWORK=${POD_NETWORK:-10.244.0.0/24}
if [ "${ZERONAS_E2E_NETNS:-}" != 1 ]; then
    flags=(--net)
    # Without root, a user namespace grants the network-admin rights inside.
    [ "$(id -u)" = 0 ] || flags+=(--map-root-user)
    if ! unshare "${flags[@]}" -- true 2>/dev/null; then
        echo "netns.sh: cannot create a network namespace (needs root, or unprivileged user namespaces)" >&2
        exit 1
    fi
    exec env ZERONAS_E2E_NETNS=1 unshare "${flags[@]}" -- "$0" "$@"
fi
ip link set lo up
ip route add local "$POD_NETWORK" dev lo
exec "$@"
