#!/bin/sh
# The Linux kernel NFS client's part of `make chaos`, run as /workload.sh by the QEMU guest's
# /init (e2e/kernel/init.sh). It mounts the share through the fault proxy with the rendered
# PV's options (a hard mount) and, for each fault in $FAULTS, announces it, waits for the host
# to apply it, writes a file and reads it back after dropping the caches.
# Lines for the host (chaos/chaos.py reads the serial console):
#   ZN-SRC NAME MD5            the guest's source files
#   ZN-FAULT NAME              the host applies fault NAME now (and ends it itself, or at:)
#   ZN-IO NAME                 the write of fault NAME starts (the host timestamps each line)
#   ZN-FAULT-END NAME SECONDS  the file of fault NAME is written and read back, in SECONDS
#   ZN-STEP NAME ok|FAIL ...   the outcome of a step
. /config.sh
m=/mnt/share
# No background writeback of the files written here: the SIGKILL step needs its UNSTABLE
# writes uncommitted until its `sync`.
echo $((300 << 20)) > /proc/sys/vm/dirty_bytes
echo $((200 << 20)) > /proc/sys/vm/dirty_background_bytes
mkdir -p "$m"
drop_caches() { sync && echo 3 > /proc/sys/vm/drop_caches; }
md5() { md5sum < "$1" | cut -d' ' -f1; }

if mount -t nfs -o "$OPTS" 10.0.2.2:/ "$m"; then echo "ZN-STEP mount ok"; else
  echo "ZN-STEP mount FAIL"
  exit 1
fi
dd if=/dev/urandom of=/tmp/src bs=1M count=8 2>/dev/null
dd if=/dev/urandom of=/tmp/src32 bs=1M count=32 2>/dev/null
echo "ZN-SRC src $(md5 /tmp/src)"
echo "ZN-SRC src32 $(md5 /tmp/src32)"

for fault in $FAULTS; do
  src=/tmp/src
  # SIGKILL needs writes in flight and uncommitted when it lands: a bigger file, no fsync
  # until the end (the host kills once part of it is on the server's disk).
  [ "$fault" = sigkill ] && src=/tmp/src32
  echo "ZN-FAULT $fault"
  # The host applies the fault on reading that line; the I/O starts a second later, inside it.
  sleep 1
  started=$(cut -d' ' -f1 /proc/uptime)
  echo "ZN-IO $fault"
  if [ "$fault" = sigkill ]; then
    dd if="$src" of="$m/k-$fault" bs=1M 2>/dev/null && sync
  else
    dd if="$src" of="$m/k-$fault" bs=1M conv=fsync 2>/dev/null
  fi
  rc=$?
  drop_caches
  got=$(md5 "$m/k-$fault")
  echo "ZN-FAULT-END $fault $(awk -v s="$started" '{ printf "%.2f", $1 - s }' /proc/uptime)"
  if [ "$rc" = 0 ] && [ "$got" = "$(md5 "$src")" ]; then
    echo "ZN-STEP $fault ok"
  else
    echo "ZN-STEP $fault FAIL dd=$rc md5=$got"
  fi
done
if umount "$m"; then echo "ZN-STEP umount ok"; else echo "ZN-STEP umount FAIL"; fi
