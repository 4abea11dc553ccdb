#!/bin/sh
# The guest's workload, run by /init as root: for each share in /config.sh, mount it with
# the PV's options, run steps.sh as root and as the ordinary user alice (uid 1000), then the
# steps that need root around them: caches dropped before reading back, df, the
# database-style chown-then-write-as-999 flow, concurrent readers and fsyncing writers on
# the one connection, 300 files renamed into place, the server restarted in the middle of a large
# write (the host does that after the ZN-RESTART line), and the quota.
# Output protocol (one line each, read by tests/kernel_client.rs):
#   ZN-STEP MODE USER STEP ok|FAIL [detail]    ZN-MD5 MODE NAME MD5    ZN-RESTART MODE
. /config.sh
# fd 3: the console, also inside a step's captured output.
exec 3>&1
me=root

. /lib.sh
as() { # USER COMMAND: runs COMMAND (a string) with sh as USER
  su -s /bin/sh "$1" -c "$2"
}
drop_caches() { sync && echo 3 > /proc/sys/vm/drop_caches; }
md5() { md5sum < "$1" | cut -d' ' -f1; }

w_df() {
  expect_equal "df size (KiB)" "$(df -k "$m" | awk 'NR == 2 {print $2}')" "$capacity_kb"
}
w_database() {
  db=$m/pgdata
  mkdir "$db" || return 1
  if [ "$mode" = posix ]; then
    # The PostgreSQL image's entrypoint: as root, give the data folder to postgres (999),
    # mode 0700, then run as 999.
    chown 999:999 "$db" && chmod 700 "$db" &&
      as pg "echo 16 > $db/PG_VERSION && mkdir $db/base && echo row > $db/base/1" &&
      expect_equal owner "$(stat -c %u:%g:%a "$db")" 999:999:700 &&
      expect_equal "file owner" "$(stat -c %u "$db/PG_VERSION")" 999 &&
      expect_equal "read back" "$(as pg "cat $db/base/1")" row &&
      refused "Permission denied" as alice "ls $db" &&
      refused "Permission denied" as alice "cat $db/base/1"
  else
    # squash: the folder stays the share user's (chown to 999 is refused); 999 writes as it.
    refused "Operation not permitted" chown 999:999 "$db" && chown "$owner" "$db" && chmod 700 "$db" &&
      as pg "echo 16 > $db/PG_VERSION && mkdir $db/base && echo row > $db/base/1" &&
      expect_equal owner "$(stat -c %u:%a "$db")" "$owner:700" &&
      expect_equal "file owner" "$(stat -c %u "$db/PG_VERSION")" "$owner" &&
      expect_equal "read back" "$(as pg "cat $db/base/1")" row
  fi
}
w_parallel() {
  # Every process's requests share the mount's one TCP connection: 8 readers of big32 and 4
  # writers that fsync (COMMITs) at the same time all end with the right bytes.
  drop_caches
  pids=""
  for i in 1 2 3 4 5 6 7 8; do
    (md5 "$m/root/big32" > "/tmp/par-read-$i") &
    pids="$pids $!"
  done
  for i in 1 2 3 4; do
    dd if=/tmp/big8 of="$m/par-$i" bs=1M conv=fsync 2>/dev/null &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p" || { echo "process $p failed"; return 1; }; done
  for i in 1 2 3 4 5 6 7 8; do
    expect_equal "reader $i" "$(cat "/tmp/par-read-$i")" "$(cat /tmp/big32.md5)" || return 1
  done
  # Read back from the server, not from the guest's page cache.
  drop_caches
  for i in 1 2 3 4; do
    expect_equal "writer $i" "$(md5 "$m/par-$i")" "$(md5 /tmp/big8)" && rm -f "$m/par-$i" || return 1
  done
}
w_many_files() {
  # An untar-like burst: 300 files written under a temporary name and renamed into place,
  # listed, then removed, with the client's folder caches in use throughout.
  d=$m/many
  mkdir "$d" || return 1
  i=0
  while [ $i -lt 300 ]; do
    echo "$i" > "$d/.t$i" && mv "$d/.t$i" "$d/f$i" || return 1
    i=$((i + 1))
  done
  expect_equal count "$(ls -A "$d" | wc -l)" 300 && expect_equal content "$(cat "$d/f299")" 299 &&
    rm -r "$d" && expect_equal gone "$(ls "$m" | grep -c '^many$')" 0
}
w_restart() {
  # The host kills the dataplane (SIGKILL) while this copy's data is arriving (it watches
  # the file grow after ZN-RESTART) and starts it again on the same port; the hard mount
  # retries, the new write verifier makes the client resend what was not committed, and
  # handles taken before the restart keep working.
  before=$(stat -c %i "$m/root/b.txt")
  cp /tmp/big64 "$m/restart.bin" &
  copy=$!
  echo "ZN-RESTART $mode" >&3
  wait $copy || { echo "cp failed with $?"; return 1; }
  sync && drop_caches &&
    expect_equal md5 "$(md5 "$m/restart.bin")" "$(md5 /tmp/big64)" &&
    expect_equal "old handle" "$(stat -c %i "$m/root/b.txt")" "$before" &&
    expect_equal "old file" "$(cat "$m/root/excl")" 1 &&
    echo "ZN-MD5 $mode restart.bin $(md5 "$m/restart.bin")" >&3
}
w_quota() {
  # Writing past the quota fails with ENOSPC, reported to the writer (never a silent short
  # file); the space is usable again after the file is removed.
  avail=$(df -k "$m" | awk 'NR == 2 {print $4}')
  refused "No space left on device" dd if=/dev/zero of="$m/over" bs=1M count=$((avail / 1024 + 4)) conv=fsync &&
    rm -f "$m/over" && echo fine > "$m/after-quota" && expect_equal content "$(cat "$m/after-quota")" fine
}

dd if=/dev/urandom of=/tmp/big32 bs=1M count=32 2>/dev/null
md5 /tmp/big32 > /tmp/big32.md5
dd if=/dev/urandom of=/tmp/big64 bs=1M count=64 2>/dev/null
dd if=/dev/urandom of=/tmp/big8 bs=1M count=8 2>/dev/null
chmod 644 /tmp/big32 /tmp/big32.md5
echo "ZN-MD5 - big32 $(cat /tmp/big32.md5)"

for mode in $MODES; do
  eval "opts=\$OPTS_$mode owner=\$OWNER_$mode capacity_kb=\$CAPACITY_KB_$mode"
  m=/mnt/$mode
  mkdir -p "$m"
  echo "ZN-MODE $mode $(cut -d' ' -f1 /proc/uptime)"
  step mount mount -t nfs -o "$opts" 10.0.2.2:/ "$m"
  grep -q " $m nfs " /proc/mounts || continue
  sh /steps.sh main "$mode" "$m/root" "$owner"
  as alice "sh /steps.sh main $mode $m/alice '$owner'"
  drop_caches
  sh /steps.sh read-big "$mode" "$m/root" "$owner"
  as alice "sh /steps.sh read-big $mode $m/alice '$owner'"
  echo "ZN-MD5 $mode root/big32 $(md5 "$m/root/big32")"
  if [ "$mode" = posix ]; then
    chmod 755 "$m/root"
    as alice "sh /steps.sh denials-of-others $mode $m/root ''"
  fi
  step df w_df
  step database-chown-then-write-as-999 w_database
  step parallel-readers-and-fsync-writers w_parallel
  step many-files-renamed-into-place w_many_files
  step restart-during-64mib-write w_restart
  step quota-enospc w_quota
  step umount umount "$m"
done
# The CSI node plugin against the posix share (e2e/kernel/csi.sh).
[ -x /usr/local/bin/zeronas-csi ] && sh /csi.sh "$CSI_PORT" "$CAPACITY_KB_posix"
echo "ZN-END $(cut -d' ' -f1 /proc/uptime)"
