#!/usr/bin/python3
"""A small NFS client on libnfs (Debian's libnfs13, through ctypes) for the dataplane tests.

Usage: libnfs_client.py 'nfs://127.0.0.1/?version=3&nfsport=P&mountport=P[&uid=U&gid=G]'
Reads one command per line on stdin and prints one JSON line per command on stdout:
  mkdir P | rmdir P | unlink P | rename A B | symlink TARGET P | readlink P | stat P
  write P HEX | read P | open NAME P | create NAME P | pread NAME OFFSET COUNT
  pwrite NAME OFFSET HEX
  statvfs P
  chmod P OCTAL | truncate P SIZE | utimes P SECONDS | quit
An open file keeps its libnfs handle (and so its NFS file handle) across commands, which is
how a test proves a handle still works after the server restarts.
"""
import ctypes
import json
import sys

lib = ctypes.CDLL("libnfs.so.13")
lib.nfs_init_context.restype = ctypes.c_void_p
lib.nfs_get_error.restype = ctypes.c_char_p
lib.nfs_get_error.argtypes = [ctypes.c_void_p]
lib.nfs_parse_url_dir.restype = ctypes.c_void_p
lib.nfs_parse_url_dir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


class NfsUrl(ctypes.Structure):
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


class Stat64(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks",
        "atime", "mtime", "ctime", "atime_nsec", "mtime_nsec", "ctime_nsec", "used")]


for name in ("nfs_mount", "nfs_mkdir", "nfs_rmdir", "nfs_unlink", "nfs_rename", "nfs_symlink",
             "nfs_readlink", "nfs_stat64", "nfs_open", "nfs_creat", "nfs_pread", "nfs_pwrite",
             "nfs_close", "nfs_fsync", "nfs_statvfs", "nfs_chmod", "nfs_truncate", "nfs_utimes"):
    getattr(lib, name).restype = ctypes.c_int
lib.nfs_pread.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p]
lib.nfs_pwrite.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p]

nfs = ctypes.c_void_p(lib.nfs_init_context())
url = ctypes.cast(lib.nfs_parse_url_dir(nfs, sys.argv[1].encode()), ctypes.POINTER(NfsUrl)).contents
if lib.nfs_mount(nfs, url.server, url.path) != 0:
    print(json.dumps({"ok": False, "error": lib.nfs_get_error(nfs).decode()}), flush=True)
    sys.exit(1)
print(json.dumps({"ok": True, "mounted": url.path.decode()}), flush=True)
handles = {}


def result(rc, **extra):
    if rc < 0:
        return {"ok": False, "rc": rc, "error": (lib.nfs_get_error(nfs) or b"").decode()}
    return dict(ok=True, **extra)


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    cmd, args = words[0], [w.encode() for w in words[1:]]
    if cmd == "quit":
        break
    if cmd in ("mkdir", "rmdir", "unlink"):
        out = result(getattr(lib, "nfs_" + cmd)(nfs, args[0]))
    elif cmd == "rename":
        out = result(lib.nfs_rename(nfs, args[0], args[1]))
    elif cmd == "symlink":
        out = result(lib.nfs_symlink(nfs, args[0], args[1]))
    elif cmd == "chmod":
        out = result(lib.nfs_chmod(nfs, args[0], int(words[2], 8)))
    elif cmd == "truncate":
        lib.nfs_truncate.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64]
        out = result(lib.nfs_truncate(nfs, args[0], int(words[2])))
    elif cmd == "utimes":
        times = (ctypes.c_long * 4)(int(words[2]), 0, int(words[2]), 0)  # two struct timeval
        out = result(lib.nfs_utimes(nfs, args[0], times))
    elif cmd == "readlink":
        buf = ctypes.create_string_buffer(4096)
        rc = lib.nfs_readlink(nfs, args[0], buf, 4096)
        out = result(rc, target=buf.value.decode())
    elif cmd == "stat":
        st = Stat64()
        rc = lib.nfs_stat64(nfs, args[0], ctypes.byref(st))
        out = result(rc, size=st.size, uid=st.uid, gid=st.gid, mode=st.mode, nlink=st.nlink, ino=st.ino)
    elif cmd == "write":
        data = bytes.fromhex(words[2])
        fh = ctypes.c_void_p()
        rc = lib.nfs_creat(nfs, args[0], 0o644, ctypes.byref(fh))
        if rc == 0:
            rc = lib.nfs_pwrite(nfs, fh, 0, len(data), data)
            rc = min(rc, lib.nfs_fsync(nfs, fh), lib.nfs_close(nfs, fh))
        out = result(rc)
    elif cmd == "read":
        fh = ctypes.c_void_p()
        rc = lib.nfs_open(nfs, args[0], 0, ctypes.byref(fh))
        data = b""
        if rc == 0:
            buf = ctypes.create_string_buffer(1 << 20)
            n = lib.nfs_pread(nfs, fh, 0, 1 << 20, buf)
            data = buf.raw[:max(n, 0)]
            rc = n if n < 0 else lib.nfs_close(nfs, fh)
        out = result(rc, data=data.hex())
    elif cmd == "open":
        fh = ctypes.c_void_p()
        rc = lib.nfs_open(nfs, args[1], 2, ctypes.byref(fh))
        handles[words[1]] = fh
        out = result(rc)
    elif cmd == "create":
        fh = ctypes.c_void_p()
        rc = lib.nfs_creat(nfs, args[1], 0o644, ctypes.byref(fh))
        handles[words[1]] = fh
        out = result(rc)
    elif cmd == "pread":
        buf = ctypes.create_string_buffer(int(words[3]))
        n = lib.nfs_pread(nfs, handles[words[1]], int(words[2]), int(words[3]), buf)
        out = result(n, data=buf.raw[:max(n, 0)].hex())
    elif cmd == "pwrite":
        data = bytes.fromhex(words[3])
        n = lib.nfs_pwrite(nfs, handles[words[1]], int(words[2]), len(data), data)
        if n >= 0:
            n = min(n, lib.nfs_fsync(nfs, handles[words[1]]))
        out = result(n)
    elif cmd == "statvfs":
        buf = (ctypes.c_ulong * 20)()
        rc = lib.nfs_statvfs(nfs, args[0], buf)
        out = result(rc, bsize=buf[0], frsize=buf[1], blocks=buf[2], bfree=buf[3], bavail=buf[4])
    else:
        out = {"ok": False, "error": "unknown command " + cmd}
    print(json.dumps(out), flush=True)
