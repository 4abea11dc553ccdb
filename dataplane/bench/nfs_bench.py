#!/usr/bin/env python3
"""NFS benchmark: zeronas-dataplane against NFS-Ganesha (FSAL_VFS), same folder, same client.

Both servers export the same folder; one client, libnfs (Debian's libnfs13, driven through
ctypes from this script), runs the same workloads against each, interleaved (zeronas,
ganesha, zeronas, ...) so drift hits both alike:

- sequential read of a 100 MiB file in 1 MiB READs (page cache warm): MB/s, and server CPU
  seconds per GB (from /proc/PID/stat);
- small files: 1,000 files of 4 KiB created and written, then stat'ed, then read (ops/s).

It reports medians and the ratio zeronas / Ganesha; results also go to target/bench/nfs.json.
Ganesha cannot run without rpcbind, so the whole run happens in a private network and mount
namespace (rpcbind and both servers on its loopback, /run a private tmpfs): nothing on the
machine is touched, and it needs root.

Usage: make bench      (or: python3 dataplane/bench/nfs_bench.py [--runs N])
This is a benchmark, not a test: it asserts nothing.
"""
import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "target", "bench")
TICK = os.sysconf("SC_CLK_TCK")
BIG = 100 << 20
SEQ_PASSES = 4  # reads of the 100 MiB file per run: 400 MiB, so CPU ticks (10 ms) are precise enough
SMALL_FILES, SMALL_SIZE = 1000, 4096
ZERONAS_PORT, GANESHA_PORT, GANESHA_MOUNT_PORT = 20600, 20700, 20701
PACKAGES = (("ganesha.nfsd", "nfs-ganesha nfs-ganesha-vfs"), ("rpcbind", "rpcbind"), ("nfs-ls", "libnfs-utils"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_tools():
    missing = [pkg for tool, pkg in PACKAGES if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool)]
    if missing:
        log(f"installing {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + " ".join(missing).split(), check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


class Nfs:
    """A libnfs context mounted on one export."""

    lib = None

    def __init__(self, port, export, mount_port=None):
        if Nfs.lib is None:
            lib = ctypes.CDLL("libnfs.so.13")
            lib.nfs_init_context.restype = ctypes.c_void_p
            lib.nfs_parse_url_dir.restype = ctypes.c_void_p
            lib.nfs_parse_url_dir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nfs_get_error.restype = ctypes.c_char_p
            lib.nfs_get_error.argtypes = [ctypes.c_void_p]
            for name in ("nfs_pread", "nfs_pwrite"):
                getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p]
            for name in ("nfs_mount", "nfs_open", "nfs_creat", "nfs_close", "nfs_stat64", "nfs_mkdir"):
                getattr(lib, name).argtypes = None
            Nfs.lib = lib
        self.ctx = ctypes.c_void_p(self.lib.nfs_init_context())
        # auto-traverse-mounts=0: libnfs 4.0 fails mounts whose EXPORT list it tries to traverse.
        mount_port = mount_port or port
        url = f"nfs://127.0.0.1{export}?version=3&nfsport={port}&mountport={mount_port}&auto-traverse-mounts=0".encode()
        parsed = ctypes.cast(self.lib.nfs_parse_url_dir(self.ctx, url), ctypes.POINTER(ctypes.c_char_p * 3)).contents
        if self.lib.nfs_mount(self.ctx, parsed[0], parsed[1]) != 0:
            raise RuntimeError(f"mount {export} on port {port}: {self.error()}")

    def error(self):
        return (self.lib.nfs_get_error(self.ctx) or b"").decode()

    def check(self, rc, what):
        if rc < 0:
            raise RuntimeError(f"{what}: {self.error()}")
        return rc

    def sequential_read(self, path, chunk=1 << 20):
        fh = ctypes.c_void_p()
        self.check(self.lib.nfs_open(self.ctx, path.encode(), 0, ctypes.byref(fh)), "open")
        buf = ctypes.create_string_buffer(chunk)
        offset = 0
        while True:
            n = self.check(self.lib.nfs_pread(self.ctx, fh, offset, chunk, buf), "pread")
            if n == 0:
                break
            offset += n
        self.lib.nfs_close(self.ctx, fh)
        return offset

    def small_files(self, folder):
        """Create+write, stat, read SMALL_FILES files; returns seconds per phase."""
        self.check(self.lib.nfs_mkdir(self.ctx, folder.encode()), "mkdir")
        data = os.urandom(SMALL_SIZE)
        buf = ctypes.create_string_buffer(SMALL_SIZE)
        stat = (ctypes.c_uint64 * 17)()
        names = [f"{folder}/f{i:04d}".encode() for i in range(SMALL_FILES)]
        times = {}
        start = time.perf_counter()
        for name in names:
            fh = ctypes.c_void_p()
            self.check(self.lib.nfs_creat(self.ctx, name, 0o644, ctypes.byref(fh)), "creat")
            self.check(self.lib.nfs_pwrite(self.ctx, fh, 0, SMALL_SIZE, data), "pwrite")
            self.lib.nfs_close(self.ctx, fh)
        times["create"] = time.perf_counter() - start
        start = time.perf_counter()
        for name in names:
            self.check(self.lib.nfs_stat64(self.ctx, name, stat), "stat")
        times["stat"] = time.perf_counter() - start
        start = time.perf_counter()
        for name in names:
            fh = ctypes.c_void_p()
            self.check(self.lib.nfs_open(self.ctx, name, 0, ctypes.byref(fh)), "open")
            self.check(self.lib.nfs_pread(self.ctx, fh, 0, SMALL_SIZE, buf), "pread")
            self.lib.nfs_close(self.ctx, fh)
        times["read"] = time.perf_counter() - start
        return times


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port, proc, name):
    import socket
    for _ in range(200):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port}")


def ganesha_pid():
    with open("/run/ganesha.pid") as f:
        return int(f.read().strip())


def stop_daemon(read_pid):
    """Stops a daemon that forked away (Ganesha) by the PID it wrote, and waits until it is gone."""
    try:
        pid = read_pid()
        os.kill(pid, 15)
    except (OSError, ValueError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def inside(args):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.makedirs("/run/rpcbind", exist_ok=True)
    # In the foreground, so this script holds its PID and stops it at the end.
    rpcbind = subprocess.Popen(["rpcbind", "-f", "-w"])
    wait_port(111, rpcbind, "rpcbind")
    work = tempfile.mkdtemp(prefix="zeronas-nfs-bench-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    with open(os.path.join(data, "big.bin"), "wb") as f:
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))
    conf = os.path.join(work, "ganesha.conf")
    with open(conf, "w") as f:
        f.write(f"""NFS_CORE_PARAM {{ NFS_Port = {GANESHA_PORT}; MNT_Port = {GANESHA_MOUNT_PORT}; Enable_NLM = false;
  Enable_RQUOTA = false; Protocols = 3; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{ Export_Id = 1; Path = {data}; Pseudo = /data; Access_Type = RW; Squash = No_Root_Squash;
  Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = WARN; }}
""")
    binary = os.path.join(REPO, "target", "release", "zeronas-dataplane")
    zeronas = subprocess.Popen([binary, "--root", data, "--http", "127.0.0.1:0", "--nfs", f"127.0.0.1:{ZERONAS_PORT}",
                                "--nfs-client", "127.0.0.1/32,rw,no_root_squash", "--log-format", "json"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ganesha.nfsd", "-L", os.path.join(work, "ganesha.log"), "-f", conf, "-p", "/run/ganesha.pid"], check=True)
    try:
        wait_port(ZERONAS_PORT, zeronas, "zeronas")
        wait_port(GANESHA_PORT, None, "ganesha")
        servers = {
            "zeronas": (Nfs(ZERONAS_PORT, "/"), zeronas.pid),
            # Ganesha answers MOUNT only on its own port (PROG_UNAVAIL on the NFS port).
            "ganesha": (Nfs(GANESHA_PORT, data, GANESHA_MOUNT_PORT), ganesha_pid()),
        }
        results = {name: {"seq_MBps": [], "seq_cpu_s_per_GB": [], "create_ops": [], "stat_ops": [], "read_ops": []}
                   for name in servers}
        for name, (client, _) in servers.items():
            client.sequential_read("/big.bin")  # warm the page cache and the server
        for run in range(args.runs):
            for name, (client, pid) in servers.items():
                cpu = cpu_seconds(pid)
                start = time.perf_counter()
                moved = sum(client.sequential_read("/big.bin") for _ in range(SEQ_PASSES))
                elapsed = time.perf_counter() - start
                cpu = cpu_seconds(pid) - cpu
                results[name]["seq_MBps"].append(moved / elapsed / 1e6)
                results[name]["seq_cpu_s_per_GB"].append(cpu / (moved / 1e9))
                phases = client.small_files(f"/small-{name}-{run}")
                for phase, seconds in phases.items():
                    results[name][f"{phase}_ops"].append(SMALL_FILES / seconds)
                log(f"run {run + 1}/{args.runs} {name}: {moved / elapsed / 1e6:.0f} MB/s, "
                    + ", ".join(f"{p} {SMALL_FILES / s:.0f}/s" for p, s in phases.items()))
    finally:
        zeronas.terminate()
        zeronas.wait()
        stop_daemon(ganesha_pid)
        rpcbind.terminate()
        rpcbind.wait()
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results, runs):
    rows = [("sequential read 100 MiB", "MB/s", "seq_MBps", True),
            ("sequential read 100 MiB", "server CPU s/GB", "seq_cpu_s_per_GB", False),
            ("1,000 × 4 KiB: create+write", "files/s", "create_ops", True),
            ("1,000 × 4 KiB: stat", "files/s", "stat_ops", True),
            ("1,000 × 4 KiB: open+read", "files/s", "read_ops", True)]
    summary = []
    print(f"NFS: medians of {runs} runs, libnfs client, same folder (zeronas / Ganesha > 1 is better for zeronas)")
    print("| workload | metric | zeronas | NFS-Ganesha | zeronas / Ganesha |")
    print("|---|---|---|---|---|")
    for label, unit, key, higher_better in rows:
        z = statistics.median(results["zeronas"][key])
        g = statistics.median(results["ganesha"][key])
        ratio = (z / g) if higher_better else (g / z if z else float("inf"))
        summary.append({"workload": label, "metric": unit, "zeronas": z, "ganesha": g, "ratio": ratio})
        print(f"| {label} | {unit} | {z:,.2f} | {g:,.2f} | {ratio:.2f}× |")
    print("(CPU row: ratio is Ganesha / zeronas, so > 1 also means zeronas is better)")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "nfs.json"), "w") as f:
        json.dump({"runs": runs, "raw": results, "summary": summary}, f, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        results = inside(args)
        print(json.dumps(results))
        return
    if os.geteuid() != 0:
        log("nfs bench skipped: it needs root (a private network and mount namespace for rpcbind and Ganesha)")
        return
    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "zeronas-dataplane"], cwd=REPO, check=True)
    out = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", sys.executable, __file__,
                          "--inside", "--runs", str(args.runs)], check=True, stdout=subprocess.PIPE, text=True)
    report(json.loads(out.stdout.strip().splitlines()[-1]), args.runs)


if __name__ == "__main__":
    main()
