#!/usr/bin/env bash
# rootfs.sh BINARY OUT: a minimal root file system for one of zeronas' binaries, used by
# `make images` and by the Containerfile alike: the binary in /usr/local/bin, exactly the
# shared libraries it links (with the dynamic loader) from this machine's Debian packages,
# /etc/passwd and /etc/group naming root, the non-root user 65532 and nobody, and an empty
# /tmp. Nothing else: no shell, no package manager.
set -euo pipefail
binary=$1 out=$2
name=$(basename "$binary")
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp"
install -m 0755 "$binary" "$out/usr/local/bin/$name"
# Shared libraries and the loader, at the paths the binary asks for.
ldd "$binary" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}' | sort -u | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done
cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/sbin/nologin
nonroot:x:65532:65532:nonroot:/:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
nogroup:x:65534:
GROUP
chmod 1777 "$out/tmp"
# One timestamp for every file: the commit's, when built from git.
stamp=${SOURCE_DATE_EPOCH:-0}
find "$out" -exec touch -h -d "@$stamp" {} +
