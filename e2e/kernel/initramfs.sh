#!/usr/bin/env bash
# Builds the guest's initramfs: busybox-static with one link per applet, the kernel's NFS
# client modules (from prepare.sh's folder), /init and the workload, users for the steps.
# Usage: initramfs.sh KERNEL_DIR OUT.cpio.gz FILE...   (each FILE is copied to the guest's /)
# EXTRA_ROOTS: folders (images/rootfs.sh output: a binary and the libraries it links) merged
# into the guest's / first, their binaries stripped of debug sections.
set -euo pipefail
kernel=$1 out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
busybox=$(command -v busybox)
if ldd "$busybox" >/dev/null 2>&1; then
  echo "initramfs.sh: $busybox is not static (install busybox-static)" >&2
  exit 1
fi
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,etc,modules,root,home/alice,home/pg}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  # `busybox` itself is in the list: a link named busybox would replace the binary.
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
for extra in ${EXTRA_ROOTS:-}; do
  cp -a "$extra/." "$root/"
done
if [ -d "$root/usr/local/bin" ]; then strip --strip-debug "$root"/usr/local/bin/*; fi
cp "$kernel"/modules/*.ko "$kernel/modules.load" "$root/modules/"
cp "$here/init.sh" "$root/init"
for f in "$@"; do cp "$f" "$root/"; done
chmod 0755 "$root/init"
printf 'root:x:0:0:root:/root:/bin/sh\npg:x:999:999:database:/home/pg:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\npg:x:999:\nalice:x:1000:\n' > "$root/etc/group"
chown 999:999 "$root/home/pg"
chown 1000:1000 "$root/home/alice"
chmod 1777 "$root/tmp"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
