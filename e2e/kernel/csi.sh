#!/bin/sh
# The CSI node plugin in the guest (`zeronas-csi --mode node`, with the libraries it links),
# driven with csi_node_call as kubelet would drive it, against the posix share on the host:
# publish (a real kernel NFS mount), publish again (idempotent), a conflicting publish
# (refused), a read-only publish, volume stats (the quota as the size), unpublish twice, and
# a server that stops answering: stats say abnormal, unpublish detaches lazily. The host
# SIGSTOPs the dataplane when it reads `ZN-CSI-STOP` and resumes it at `ZN-CSI-CONT`.
# Usage: csi.sh PORT CAPACITY_KB
port=$1 capacity_kb=$2
mode=csi me=root
. /lib.sh
exec 3>&1
sock=/tmp/csi/csi.sock
call() { /usr/local/bin/csi_node_call "$sock" "$@"; }
vol=default/pvc-guest
rw=/tmp/pods/a/volumes/kubernetes.io~csi/pvc-guest/mount
ro=/tmp/pods/b/volumes/kubernetes.io~csi/pvc-guest/mount
opts="port=$port,mountport=$port"

c_start() {
  /usr/local/bin/zeronas-csi --mode node --node-id guest --endpoint "unix://$sock" > /tmp/csi.log 2>&1 &
  echo $! > /tmp/csi.pid
  i=0
  while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  test -S "$sock" || { cat /tmp/csi.log; return 1; }
}
c_publish() {
  call publish "$vol" "$rw" 10.0.2.2 rw "$opts" &&
    grep -q " $rw nfs " /proc/mounts &&
    mkdir -p "$rw/csi" && echo "through csi" > "$rw/csi/hello.txt" &&
    expect_equal content "$(cat "$rw/csi/hello.txt")" "through csi"
}
c_publish_again() { call publish "$vol" "$rw" 10.0.2.2 rw "$opts" && expect_equal mounts "$(grep -c " $rw nfs " /proc/mounts)" 1; }
c_conflict() {
  out=$(call publish "$vol" "$rw" 10.0.2.2 ro "$opts")
  case $out in "error AlreadyExists"*) return 0 ;; esac
  echo "a read-only publish over the read-write mount: $out"
  return 1
}
c_read_only() {
  call publish "$vol" "$ro" 10.0.2.2 ro "$opts" &&
    expect_equal content "$(cat "$ro/csi/hello.txt")" "through csi" &&
    refused "Read-only file system" sh -c "echo x > '$ro/csi/other.txt'"
}
c_stats() {
  out=$(call stats "$vol" "$rw") || { echo "$out"; return 1; }
  total=$(echo "$out" | sed -n 's/.*bytes_total=\([0-9]*\).*/\1/p')
  expect_equal "bytes_total (KiB)" "$((total / 1024))" "$capacity_kb" &&
    case $out in *"abnormal=false"*) ;; *) echo "$out"; return 1 ;; esac
}
c_unpublish_twice() {
  call unpublish "$vol" "$ro" && call unpublish "$vol" "$ro" &&
    expect_equal "still mounted" "$(grep -c " $ro " /proc/mounts)" 0 && test ! -e "$ro"
}
c_stale() {
  echo "ZN-CSI-STOP" >&3
  # The host stops the dataplane as soon as it reads the line (as for ZN-RESTART).
  sleep 2
  out=$(call stats "$vol" "$rw")
  case $out in *"abnormal=true"*) ;; *) echo "stats of a stopped server: $out"; return 1 ;; esac
  call unpublish "$vol" "$rw" && expect_equal "still mounted" "$(grep -c " $rw " /proc/mounts)" 0 &&
    test ! -e "$rw"
}

step csi-node-plugin-starts c_start
step csi-publish-mounts-nfs c_publish
step csi-publish-again-is-idempotent c_publish_again
step csi-conflicting-publish-refused c_conflict
step csi-read-only-publish c_read_only
step csi-volume-stats-show-the-quota c_stats
step csi-unpublish-twice c_unpublish_twice
step csi-stale-server-abnormal-and-lazy-unpublish c_stale
echo "ZN-CSI-CONT" >&3
kill "$(cat /tmp/csi.pid)" 2>/dev/null
