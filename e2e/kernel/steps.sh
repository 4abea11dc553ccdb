#!/bin/sh
# The file workload one user runs on a share mounted by the Linux kernel NFS client.
# Usage (as the user, from workload.sh): steps.sh PHASE MODE DIR [OWNER]
#   PHASE  main | read-big | denials-of-others
#   MODE   posix | squash (only printed, and to know what the mode guarantees)
#   DIR    the user's own folder on the mount (created here)
#   OWNER  the uid every file belongs to (squash), empty: the writer's own uid (posix)
# Each step prints one line: `ZN-STEP MODE USER STEP ok` or `... FAIL detail`.
phase=$1 mode=$2 dir=$3 owner=$4
me=$(id -un)
uid=$(id -u)
expect_owner=${owner:-$uid}

. /lib.sh

s_create() { : > "$dir/empty" && test -f "$dir/empty" && expect_equal size "$(stat -c %s "$dir/empty")" 0; }
s_write_read() { echo hello > "$dir/a.txt" && expect_equal content "$(cat "$dir/a.txt")" hello; }
s_owner() {
  expect_equal "stat uid" "$(stat -c %u "$dir/a.txt")" "$expect_owner" &&
    expect_equal "ls -ln uid" "$(ls -ln "$dir/a.txt" | awk '{print $3}')" "$expect_owner"
}
s_append() { echo world >> "$dir/a.txt" && expect_equal content "$(cat "$dir/a.txt")" "$(printf 'hello\nworld')"; }
s_offset() {
  printf XY | dd of="$dir/a.txt" bs=1 seek=1 conv=notrunc 2>/dev/null &&
    expect_equal content "$(cat "$dir/a.txt")" "$(printf 'hXYlo\nworld')"
}
s_mkdir_p() { mkdir -p "$dir/d1/d2/d3" && test -d "$dir/d1/d2/d3" && mkdir -p "$dir/d1/d2/d3"; }
s_rename() { mv "$dir/a.txt" "$dir/b.txt" && test ! -e "$dir/a.txt" && expect_equal content "$(head -c 5 "$dir/b.txt")" hXYlo; }
s_rename_over() { echo new > "$dir/c.txt" && mv "$dir/c.txt" "$dir/b.txt" && expect_equal content "$(cat "$dir/b.txt")" new; }
s_hard_link() { ln "$dir/b.txt" "$dir/hl" && expect_equal links "$(stat -c %h "$dir/b.txt")" 2 && expect_equal content "$(cat "$dir/hl")" new; }
s_symlink() {
  ln -s b.txt "$dir/sl" && expect_equal target "$(readlink "$dir/sl")" b.txt &&
    expect_equal content "$(cat "$dir/sl")" new
}
s_chmod() { chmod 640 "$dir/b.txt" && expect_equal mode "$(stat -c %a "$dir/b.txt")" 640; }
s_chown() {
  if [ "$mode" = posix ] && [ "$uid" = 0 ]; then
    chown 1234:1234 "$dir/hl" && expect_equal owner "$(stat -c %u:%g "$dir/hl")" 1234:1234 &&
      chown 0:0 "$dir/hl"
  elif [ "$mode" = posix ]; then
    # An ordinary user may change the group to one of its own, never the owner.
    chgrp "$(id -g)" "$dir/b.txt" && refused "Operation not permitted" chown 0 "$dir/b.txt"
  else
    # squash: every file belongs to the share's user; changing that is refused, keeping it works.
    chown "$owner" "$dir/b.txt" && refused "Operation not permitted" chown 1234 "$dir/b.txt"
  fi
}
s_truncate() {
  truncate -s 2 "$dir/b.txt" && expect_equal content "$(cat "$dir/b.txt")" ne &&
    truncate -s 10000 "$dir/b.txt" && expect_equal size "$(stat -c %s "$dir/b.txt")" 10000
}
s_excl() {
  (set -C; echo 1 > "$dir/excl") && refused "File exists" sh -c "set -C; echo 2 > '$dir/excl'" &&
    expect_equal content "$(cat "$dir/excl")" 1
}
s_read_only_file() {
  # Created read-only and written by its creator through the same open (cp -p, git objects);
  # a later open for writing is refused as on a local disk, except for root in posix mode.
  (umask 0222 && echo data > "$dir/ro.txt") && expect_equal content "$(cat "$dir/ro.txt")" data &&
    expect_equal mode "$(stat -c %a "$dir/ro.txt")" 444 || return 1
  if [ "$mode" = posix ] && [ "$uid" = 0 ]; then
    echo more >> "$dir/ro.txt" && expect_equal content "$(cat "$dir/ro.txt")" "$(printf 'data\nmore')"
  else
    refused "Permission denied" sh -c "echo more >> '$dir/ro.txt'"
  fi
}
s_big_folder() {
  mkdir "$dir/many" && for i in $(seq 1 700); do : > "$dir/many/file-$i" || return 1; done &&
    expect_equal "ls count" "$(ls "$dir/many" | wc -l)" 700 &&
    expect_equal "ls -l count" "$(ls -ln "$dir/many" | grep -c '^-')" 700 &&
    expect_equal "foreign owners" "$(ls -ln "$dir/many" | awk -v o="$expect_owner" '/^-/ && $3 != o' | wc -l)" 0
}
s_big_write() { cp /tmp/big32 "$dir/big32" && sync; }
s_big_read() {
  expect_equal md5 "$(md5sum < "$dir/big32" | cut -d' ' -f1)" "$(cat /tmp/big32.md5)"
}
s_tar() {
  mkdir -p "$dir/t/sub" && echo one > "$dir/t/one" && seq 1 5000 > "$dir/t/sub/seq" &&
    ln -s one "$dir/t/link" && tar cf "/tmp/t-$mode-$me.tar" -C "$dir" t &&
    mkdir "$dir/x" && tar xf "/tmp/t-$mode-$me.tar" -C "$dir/x" &&
    expect_equal listing "$(cd "$dir/x/t" && find . | sort | tr '\n' ' ')" "$(cd "$dir/t" && find . | sort | tr '\n' ' ')" &&
    expect_equal seq "$(md5sum < "$dir/x/t/sub/seq")" "$(md5sum < "$dir/t/sub/seq")" &&
    expect_equal link "$(readlink "$dir/x/t/link")" one
}
s_denials() {
  # What POSIX refuses whoever asks.
  refused "Directory not empty" rmdir "$dir/d1" && refused "File exists" mkdir "$dir/d1" &&
    refused "is a directory" rm "$dir/d1" && refused "Operation not permitted" ln "$dir/d1" "$dir/d1-link" &&
    refused "Invalid argument" mv "$dir/d1" "$dir/d1/d2/inside" &&
    refused "nonexistent directory" sh -c "echo x > '$dir/d1/d2/d3/nowhere/file'"
}
s_denials_of_others() {
  # posix, as an ordinary user, on root's files: root's folder is 0755, b.txt 0640, big32 0644.
  other=$dir
  refused "Permission denied" sh -c "echo x >> '$other/big32'" &&
    refused "Permission denied" cat "$other/b.txt" &&
    refused "Operation not permitted" chmod 777 "$other/big32" &&
    refused "Permission denied" touch "$other/new-by-$me" &&
    refused "Permission denied" rm -f "$other/big32" &&
    refused "Permission denied" mv "$other/big32" "$other/moved" &&
    test -s "$other/big32"
}

case $phase in
main)
  mkdir -p "$dir" || { report mkdir FAIL "cannot create $dir"; exit 1; }
  step create s_create
  step write-read s_write_read
  step owner s_owner
  step append s_append
  step write-at-offset s_offset
  step mkdir-p s_mkdir_p
  step rename s_rename
  step rename-over s_rename_over
  step hard-link s_hard_link
  step symlink s_symlink
  step chmod s_chmod
  step chown s_chown
  step truncate s_truncate
  step o-excl-twice s_excl
  step create-read-only-then-write s_read_only_file
  step folder-700-entries s_big_folder
  step tar-round-trip s_tar
  step posix-denials s_denials
  step write-32mib s_big_write
  ;;
read-big)
  step read-32mib-after-drop-caches s_big_read
  ;;
denials-of-others)
  step denials-on-others-files s_denials_of_others
  ;;
esac
exit 0
