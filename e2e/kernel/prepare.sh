#!/usr/bin/env bash
# Fetches Debian's kernel (the package `linux-image-amd64` depends on) with `apt-get
# download`, once, into a cache outside the repository, and keeps only what the NFS client
# guest needs: vmlinuz and the modules below, with their load order. Prints the folder.
# Nothing is installed into the host's /boot.
set -euo pipefail
CACHE=${ZERONAS_KERNEL_CACHE:-$HOME/.cache/zeronas-kernel}
# Modules the guest loads (their dependencies are added in load order from modules.dep).
WANTED=(virtio_pci virtio_net nfsv3)

kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
pkg=$(kernel_package)
if [ -z "$pkg" ]; then
  SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
  $SUDO apt-get update -qq >&2 || true
  pkg=$(kernel_package)
fi
if [ -z "$pkg" ]; then
  echo "prepare.sh: apt knows no linux-image-amd64 (run apt-get update)" >&2
  exit 1
fi
dir=$CACHE/$pkg
if [ -s "$dir/vmlinuz" ] && [ -s "$dir/modules.load" ]; then
  echo "$dir"
  exit 0
fi
echo "prepare.sh: fetching $pkg into $dir (once)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg" >&2 2>/dev/null) || (cd "$work" && apt-get download "$pkg" >&2)
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
version=${pkg#linux-image-}
depmod -b "$work/root" "$version"
mkdir -p "$dir.tmp/modules"
cp "$work/root/boot/vmlinuz-$version" "$dir.tmp/vmlinuz"
# Load order: each wanted module after its dependencies (modules.dep lists them).
python3 - "$work/root/lib/modules/$version" "$dir.tmp" "${WANTED[@]}" <<'PY'
import os, shutil, sys
moddir, out, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
deps = {}
for line in open(os.path.join(moddir, "modules.dep")):
    path, _, rest = line.partition(":")
    deps[path] = rest.split()
by_name = {os.path.basename(p).split(".ko")[0]: p for p in deps}
order, seen = [], set()
def visit(path):
    if path in seen:
        return
    seen.add(path)
    for d in reversed(deps[path]):
        visit(d)
    order.append(path)
for name in wanted:
    visit(by_name[name])
with open(os.path.join(out, "modules.load"), "w") as f:
    for path in order:
        base = os.path.basename(path)
        shutil.copy(os.path.join(moddir, path), os.path.join(out, "modules", base))
        f.write(base + "\n")
PY
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
