#!/usr/bin/env python3
"""NFS benchmark: zeronas-dataplane against NFS-Ganesha (FSAL_VFS), same folder, same client.

Both servers export the same folder; the client is libnfs (Debian's libnfs13, driven through
ctypes from this script), each context its own TCP connection. Every run goes through the
workloads in turn, each against zeronas then Ganesha, so drift hits both alike:

- seq: one client reads a 100 MiB file in 1 MiB READs, four passes (page cache warm): MB/s,
  and server CPU seconds per GB (from /proc/PID/stat);
- small: one client, 1,000 files of 4 KiB created and written, then stat'ed, then read (ops/s);
  libnfs's close of a written file sends a COMMIT, as the Linux client's does, so each created
  file costs the server an fsync;
- par-seq: 8 clients (processes, released together by a barrier), each reads its own 100 MiB
  file twice in 1 MiB READs: aggregate MB/s (all bytes / wall time) and server CPU s/GB;
- par-meta: 8 clients, each in its own folder, 10 batches of 20 files: create + write 4 KiB
  (+ close, so COMMIT), stat, one listing (READDIRPLUS), rename, remove; five ops a file and
  one a listing: ops/s;
- qd32: one connection, the libnfs async API keeping 32 READs of 64 KiB at random offsets of
  the cached 100 MiB file outstanding for 2 s; run A reads only, run B reads while the same
  connection writes a 64 MiB file (UNSTABLE WRITEs of 1 MiB, 4 outstanding) and COMMITs it,
  over and over, and a control between them writes the same way but never COMMITs: READ
  p50/p99 of each, p99(B) / p99(A) and p99(B) / p99(control) per server;
- par-rand: 8 clients, 2,500 READs of 4 KiB each at random offsets of its own cached file: ops/s;
- listing: opendir + readdir (libnfs reads the whole folder with READDIRPLUS, its dircache off)
  of folders of 2,500, 5,000 and 10,000 empty files, three times a run: time, and time per entry.

It reports medians, the ratio zeronas / Ganesha (Ganesha / zeronas where lower is better, so
above 1 favours zeronas) and each workload's goal; everything also goes to
target/bench/nfs.json. A workload that fails on a server is reported as an error and skipped
for that server in the later runs. Ganesha cannot run without rpcbind, so the whole run happens
in a private network and mount namespace (rpcbind and both servers on its loopback, /run a
private tmpfs): nothing on the machine is touched, and it needs root.

Usage: make bench      (or: python3 dataplane/bench/nfs_bench.py [--runs N] [--only NAME,...] [--no-build])
This is a benchmark, not a test: it asserts nothing.
"""
import argparse
import collections
import ctypes
import itertools
import json
import multiprocessing
import os
import queue
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "target", "bench")
TICK = os.sysconf("SC_CLK_TCK")
BIG = 100 << 20
SEQ_PASSES = 4  # reads of the 100 MiB file per run: 400 MiB, so CPU ticks (10 ms) are precise enough
SMALL_FILES, SMALL_SIZE = 1000, 4096
CLIENTS = 8  # processes of the parallel workloads, one libnfs context (TCP connection) each
PAR_SEQ_PASSES = 2  # 8 clients x 2 x 100 MiB = 1.6 GB per run
META_BATCHES, META_BATCH = 10, 20
RAND_READS, RAND_SIZE = 2500, 4096
QD_READS, QD_READ_SIZE, QD_SECONDS = 32, 64 << 10, 2.0
QD_DIRTY, QD_WRITE_SIZE, QD_WRITES = 64 << 20, 1 << 20, 4
LIST_SIZES, LIST_REPEATS = (2500, 5000, 10000), 3
RPC_TIMEOUT_MS = 60_000  # a server that stops answering fails the workload instead of hanging it
ZERONAS_PORT, GANESHA_PORT, GANESHA_MOUNT_PORT = 20600, 20700, 20701
PACKAGES = (("ganesha.nfsd", "nfs-ganesha nfs-ganesha-vfs"), ("rpcbind", "rpcbind"), ("nfs-ls", "libnfs-utils"))

P, U64 = ctypes.c_void_p, ctypes.c_uint64
# typedef void (*nfs_cb)(int err, struct nfs_context *nfs, void *data, void *private_data);
CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, P, P, P)
# name: (restype, argtypes), from /usr/include/nfsc/libnfs.h (libnfs 4.0)
SIGNATURES = {
    "nfs_init_context": (P, []),
    "nfs_parse_url_dir": (P, [P, ctypes.c_char_p]),
    "nfs_get_error": (ctypes.c_char_p, [P]),
    "nfs_set_dircache": (None, [P, ctypes.c_int]),
    "nfs_set_timeout": (None, [P, ctypes.c_int]),
    "nfs_mount": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_char_p]),
    "nfs_destroy_context": (None, [P]),
    "nfs_open": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int, P]),
    "nfs_creat": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int, P]),
    "nfs_close": (ctypes.c_int, [P, P]),
    "nfs_pread": (ctypes.c_int, [P, P, U64, U64, P]),
    "nfs_pwrite": (ctypes.c_int, [P, P, U64, U64, P]),
    "nfs_stat64": (ctypes.c_int, [P, ctypes.c_char_p, P]),
    "nfs_mkdir": (ctypes.c_int, [P, ctypes.c_char_p]),
    "nfs_rename": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_char_p]),
    "nfs_unlink": (ctypes.c_int, [P, ctypes.c_char_p]),
    "nfs_opendir": (ctypes.c_int, [P, ctypes.c_char_p, P]),
    "nfs_readdir": (P, [P, P]),
    "nfs_closedir": (None, [P, P]),
    "nfs_pread_async": (ctypes.c_int, [P, P, U64, U64, CALLBACK, P]),
    "nfs_pwrite_async": (ctypes.c_int, [P, P, U64, U64, P, CALLBACK, P]),
    "nfs_fsync_async": (ctypes.c_int, [P, P, CALLBACK, P]),
    "nfs_get_fd": (ctypes.c_int, [P]),
    "nfs_which_events": (ctypes.c_int, [P]),
    "nfs_service": (ctypes.c_int, [P, ctypes.c_int]),
}


class DirEntry(ctypes.Structure):
    """The first fields of libnfs's struct nfsdirent (only read, never allocated here)."""

    _fields_ = [("next", P), ("name", ctypes.c_char_p)]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_tools():
    missing = [pkg for tool, pkg in PACKAGES if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool)]
    if missing:
        log(f"installing {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + " ".join(missing).split(), check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def libnfs():
    """libnfs.so.13 with the signatures above, loaded once per process."""
    if libnfs.lib is None:
        lib = ctypes.CDLL("libnfs.so.13")
        for name, (restype, argtypes) in SIGNATURES.items():
            getattr(lib, name).restype = restype
            getattr(lib, name).argtypes = argtypes
        libnfs.lib = lib
    return libnfs.lib


libnfs.lib = None


class Nfs:
    """A libnfs context (one TCP connection) mounted on one export; libnfs's dircache is off."""

    def __init__(self, port, export, mount_port=None):
        self.lib = libnfs()
        self.ctx = P(self.lib.nfs_init_context())
        self.lib.nfs_set_dircache(self.ctx, 0)
        self.lib.nfs_set_timeout(self.ctx, RPC_TIMEOUT_MS)
        self.callback = None  # the async callback in use, kept alive as long as the context
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

    def destroy(self):
        self.lib.nfs_destroy_context(self.ctx)

    def open(self, path, flags=os.O_RDONLY):
        fh = P()
        self.check(self.lib.nfs_open(self.ctx, path.encode(), flags, ctypes.byref(fh)), f"open {path}")
        return fh

    def creat(self, path):
        fh = P()
        self.check(self.lib.nfs_creat(self.ctx, path.encode(), 0o644, ctypes.byref(fh)), f"creat {path}")
        return fh

    def close(self, fh):
        self.lib.nfs_close(self.ctx, fh)

    def mkdir(self, path):
        self.check(self.lib.nfs_mkdir(self.ctx, path.encode()), f"mkdir {path}")

    def sequential_read(self, path, chunk=1 << 20):
        fh = self.open(path)
        buf = ctypes.create_string_buffer(chunk)
        offset = 0
        while True:
            n = self.check(self.lib.nfs_pread(self.ctx, fh, offset, chunk, buf), "pread")
            if n == 0:
                break
            offset += n
        self.close(fh)
        return offset

    def random_reads(self, fh, offsets, size):
        """One READ of `size` bytes at each offset; returns the number of READs."""
        buf = ctypes.create_string_buffer(size)
        for offset in offsets:
            if self.check(self.lib.nfs_pread(self.ctx, fh, offset, size, buf), "pread") != size:
                raise RuntimeError(f"short read at {offset}")
        return len(offsets)

    def write_file(self, path, data):
        """Creates (or truncates) path and writes data into it in one WRITE."""
        fh = self.creat(path)
        self.check(self.lib.nfs_pwrite(self.ctx, fh, 0, len(data), data), f"pwrite {path}")
        self.close(fh)

    def list_folder(self, path):
        """opendir (all of the folder's READDIRPLUS calls) and readdir; returns the entries but . and .."""
        folder = P()
        self.check(self.lib.nfs_opendir(self.ctx, path.encode(), ctypes.byref(folder)), f"opendir {path}")
        count = 0
        while entry := self.lib.nfs_readdir(self.ctx, folder):
            count += DirEntry.from_address(entry).name not in (b".", b"..")
        self.lib.nfs_closedir(self.ctx, folder)
        return count

    def small_files(self, folder):
        """Create+write, stat, read SMALL_FILES files; returns seconds per phase."""
        self.mkdir(folder)
        data = os.urandom(SMALL_SIZE)
        buf = ctypes.create_string_buffer(SMALL_SIZE)
        stat = (ctypes.c_uint64 * 17)()
        names = [f"{folder}/f{i:04d}" for i in range(SMALL_FILES)]
        times = {}
        start = time.perf_counter()
        for name in names:
            self.write_file(name, data)
        times["create"] = time.perf_counter() - start
        start = time.perf_counter()
        for name in names:
            self.check(self.lib.nfs_stat64(self.ctx, name.encode(), stat), "stat")
        times["stat"] = time.perf_counter() - start
        start = time.perf_counter()
        for name in names:
            fh = self.open(name)
            self.check(self.lib.nfs_pread(self.ctx, fh, 0, SMALL_SIZE, buf), "pread")
            self.close(fh)
        times["read"] = time.perf_counter() - start
        return times

    def metadata_mix(self, folder):
        """META_BATCHES batches of META_BATCH files in folder: create + write 4 KiB (+ close, which
        COMMITs), stat, one listing, rename, remove. Returns the ops: five a file, one a listing."""
        data = os.urandom(SMALL_SIZE)
        stat = (ctypes.c_uint64 * 17)()
        for batch in range(META_BATCHES):
            names = [f"{folder}/m{batch}-{i}".encode() for i in range(META_BATCH)]
            for name in names:
                self.write_file(name.decode(), data)
            for name in names:
                self.check(self.lib.nfs_stat64(self.ctx, name, stat), "stat")
            if (listed := self.list_folder(folder)) != META_BATCH:
                raise RuntimeError(f"listing {folder}: {listed} entries, {META_BATCH} expected")
            for name in names:
                self.check(self.lib.nfs_rename(self.ctx, name, name + b".r"), "rename")
            for name in names:
                self.check(self.lib.nfs_unlink(self.ctx, name + b".r"), "unlink")
        return META_BATCHES * (META_BATCH * 5 + 1)


class QueueDepthRun:
    """QD_READS READs kept outstanding on one context with the libnfs async API, each one's
    latency recorded; with a dirty file, a second stream on the same context writes QD_DIRTY
    bytes (UNSTABLE: libnfs sends FILE_SYNC only for files opened O_SYNC), COMMITs them unless
    `commit` is false, and starts over, QD_WRITES WRITEs outstanding, no WRITE while a COMMIT is."""

    def __init__(self, client, read_fh, dirty_fh=None, commit=True):
        self.client, self.lib = client, client.lib
        self.read_fh, self.dirty_fh, self.commit = read_fh, dirty_fh, commit
        self.callback = CALLBACK(self.done)
        client.callback = self.callback
        self.ids = itertools.count(1)
        self.pending = {}  # request id -> (kind, time issued)
        self.in_flight = collections.Counter()
        self.latencies = {"read": [], "write": [], "commit": []}
        self.written = 0
        self.write_offset = 0
        self.errors = []
        self.rng = random.Random(7)
        self.data = ctypes.create_string_buffer(os.urandom(QD_WRITE_SIZE), QD_WRITE_SIZE)

    def issue(self, kind, call, *args):
        request = next(self.ids)
        self.pending[request] = (kind, time.perf_counter())
        if call(self.client.ctx, *args, self.callback, request) != 0:
            del self.pending[request]
            raise RuntimeError(f"queueing a {kind}: {self.client.error()}")
        self.in_flight[kind] += 1

    def done(self, status, _nfs, data, request):
        """libnfs's callback: status < 0 is -errno with data the error text, else a byte count (or 0)."""
        kind, issued = self.pending.pop(request)
        self.in_flight[kind] -= 1
        if status < 0:
            self.errors.append(f"{kind}: {ctypes.cast(data, ctypes.c_char_p).value!r} ({status})")
            return
        self.latencies[kind].append(time.perf_counter() - issued)
        if kind == "write":
            self.written += status

    def top_up(self):
        """Issues READs up to the queue depth and the write stream's next WRITEs or COMMIT."""
        while self.in_flight["read"] < QD_READS:
            offset = self.rng.randrange(BIG // QD_READ_SIZE) * QD_READ_SIZE
            self.issue("read", self.lib.nfs_pread_async, self.read_fh, offset, QD_READ_SIZE)
        if self.dirty_fh is None or self.in_flight["commit"]:
            return
        while self.write_offset < QD_DIRTY and self.in_flight["write"] < QD_WRITES:
            self.issue("write", self.lib.nfs_pwrite_async, self.dirty_fh, self.write_offset, QD_WRITE_SIZE, self.data)
            self.write_offset += QD_WRITE_SIZE
        if self.write_offset >= QD_DIRTY and not self.in_flight["write"]:
            if self.commit:
                self.issue("commit", self.lib.nfs_fsync_async, self.dirty_fh)
            self.write_offset = 0

    def service(self, poller):
        """One poll on the context's socket (100 ms at most, so libnfs's timeouts run) and nfs_service."""
        ctx = self.client.ctx
        poller.register(self.lib.nfs_get_fd(ctx), self.lib.nfs_which_events(ctx))
        events = poller.poll(100)
        if self.lib.nfs_service(ctx, events[0][1] if events else 0) < 0:
            raise RuntimeError(f"nfs_service: {self.client.error()}")

    def run(self, seconds):
        """Keeps the streams going for `seconds`, then waits for what is outstanding; returns the
        elapsed seconds."""
        poller = select.poll()
        start = time.perf_counter()
        while True:
            if time.perf_counter() - start < seconds and not self.errors:
                self.top_up()
            if not self.pending:
                break
            self.service(poller)
        if self.errors:
            raise RuntimeError("; ".join(self.errors[:3]))
        return time.perf_counter() - start


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


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


class Server:
    """One server under test: how to mount it, its PID (for CPU time) and a client context."""

    def __init__(self, name, pid, port, export, mount_port=None):
        self.name, self.pid = name, pid
        self.mount = (port, export, mount_port)
        self.client = Nfs(*self.mount)

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except OSError:
            return False


# The parallel workloads: job(client, index, tag) prepares client `index` (before the barrier)
# and returns the measured part, which returns how many bytes or ops it moved.

def seq_job(client, index, _tag):
    """Sequential read of the client's own 100 MiB file, PAR_SEQ_PASSES times (bytes)."""
    path = f"/big-{index}.bin"
    return lambda: sum(client.sequential_read(path) for _ in range(PAR_SEQ_PASSES))


def meta_job(client, index, tag):
    """The metadata mix in a folder of the client's own (ops)."""
    folder = f"/meta-{tag}-{index}"
    client.mkdir(folder)
    return lambda: client.metadata_mix(folder)


def rand_job(client, index, _tag):
    """RAND_READS READs of RAND_SIZE at random offsets of the client's own cached file (ops)."""
    fh = client.open(f"/big-{index}.bin")
    rng = random.Random(index)
    offsets = [rng.randrange(BIG // RAND_SIZE) * RAND_SIZE for _ in range(RAND_READS)]
    return lambda: client.random_reads(fh, offsets, RAND_SIZE)


def client_process(mount, job, index, tag, barrier, results):
    """One parallel client: mounts, prepares, waits at the barrier, runs; puts (amount, start,
    end) on results, or an error text, or None when another client's failure broke the barrier."""
    try:
        client = Nfs(*mount)
        measured = job(client, index, tag)
        barrier.wait()
        start = time.perf_counter()
        amount = measured()
        results.put((amount, start, time.perf_counter()))
        client.destroy()
    except threading.BrokenBarrierError:
        results.put(None)
    except Exception as e:  # reported by the parent, which must not wait for this client forever
        barrier.abort()
        results.put(f"client {index}: {e}")


def parallel(server, job, tag):
    """Runs CLIENTS client processes released together; returns (total amount, wall seconds from
    the first start to the last end, server CPU seconds meanwhile)."""
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(CLIENTS + 1, timeout=120)
    results = mp.Queue()
    procs = [mp.Process(target=client_process, args=(server.mount, job, i, tag, barrier, results))
             for i in range(CLIENTS)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    cpu = cpu_seconds(server.pid) if server.alive() else 0.0
    try:
        done = [results.get(timeout=300) for _ in procs]
    except queue.Empty:
        raise RuntimeError("a client neither finished nor failed within 300 s")
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    errors = [d for d in done if isinstance(d, str)]
    if errors or None in done:
        raise RuntimeError("; ".join(errors[:3]) or "the clients were not all ready within 120 s")
    cpu = cpu_seconds(server.pid) - cpu
    wall = max(end for _, _, end in done) - min(start for _, start, _ in done)
    return sum(amount for amount, _, _ in done), wall, cpu


# The workloads: each measures one server once and returns {metric key: value}.

def run_seq(server, _run):
    """One client reads the 100 MiB file SEQ_PASSES times."""
    cpu = cpu_seconds(server.pid)
    start = time.perf_counter()
    moved = sum(server.client.sequential_read("/big.bin") for _ in range(SEQ_PASSES))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(server.pid) - cpu
    return {"seq_MBps": moved / elapsed / 1e6, "seq_cpu_s_per_GB": cpu / (moved / 1e9)}


def run_small(server, run):
    """One client: create+write, stat, open+read of SMALL_FILES small files."""
    phases = server.client.small_files(f"/small-{server.name}-{run}")
    return {f"{phase}_ops": SMALL_FILES / seconds for phase, seconds in phases.items()}


def run_par_seq(server, run):
    moved, wall, cpu = parallel(server, seq_job, f"{server.name}-{run}")
    return {"par_seq_MBps": moved / wall / 1e6, "par_seq_cpu_s_per_GB": cpu / (moved / 1e9)}


def run_par_meta(server, run):
    ops, wall, _ = parallel(server, meta_job, f"{server.name}-{run}")
    return {"par_meta_ops": ops / wall}


def run_par_rand(server, run):
    ops, wall, _ = parallel(server, rand_job, f"{server.name}-{run}")
    return {"par_rand_ops": ops / wall}


def run_qd32(server, _run):
    """Run A: READs only. Then, as a control, the READs beside the WRITEs of a fresh 64 MiB file
    never committed, and run B: the READs beside the WRITEs and COMMITs."""
    client = server.client
    read_fh = client.open("/big.bin")
    dirty_fh = client.creat(f"/dirty-{server.name}.bin")
    out = {}
    try:
        for label, dirty, commit in (("qd_read", None, False), ("qd_writes", dirty_fh, False),
                                     ("qd_mixed", dirty_fh, True)):
            os.sync()  # no writeback left over from earlier workloads
            stream = QueueDepthRun(client, read_fh, dirty, commit)
            elapsed = stream.run(QD_SECONDS)
            reads = stream.latencies["read"]
            out[f"{label}_p50_ms"] = percentile(reads, 0.50) * 1e3
            out[f"{label}_p99_ms"] = percentile(reads, 0.99) * 1e3
            out[f"{label}_reads_per_s"] = len(reads) / elapsed
        out["qd_p99_inflation"] = out["qd_mixed_p99_ms"] / out["qd_read_p99_ms"]
        out["qd_p99_commit_share"] = out["qd_mixed_p99_ms"] / out["qd_writes_p99_ms"]
        out["qd_commits"] = len(stream.latencies["commit"])
        out["qd_commit_ms"] = statistics.median(stream.latencies["commit"]) * 1e3 if stream.latencies["commit"] else 0.0
        out["qd_write_MBps"] = stream.written / elapsed / 1e6
    finally:
        client.close(read_fh)
        client.close(dirty_fh)
    return out


def run_listing(server, _run):
    """LIST_REPEATS listings of each folder (fresh opendir each), the median time of each size."""
    out = {}
    for size in LIST_SIZES:
        times = []
        for _ in range(LIST_REPEATS):
            start = time.perf_counter()
            listed = server.client.list_folder(f"/list-{size}")
            times.append(time.perf_counter() - start)
            if listed != size:
                raise RuntimeError(f"listing /list-{size}: {listed} entries")
        seconds = statistics.median(times)
        out[f"list_{size}_ms"] = seconds * 1e3
        out[f"list_{size}_us_per_entry"] = seconds / size * 1e6
    out["list_linearity"] = out[f"list_{LIST_SIZES[-1]}_us_per_entry"] / out[f"list_{LIST_SIZES[0]}_us_per_entry"]
    return out


WORKLOADS = {"seq": run_seq, "small": run_small, "par-seq": run_par_seq, "par-meta": run_par_meta,
             "qd32": run_qd32, "par-rand": run_par_rand, "listing": run_listing}


def write_random(path, size):
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))


def prepare_data(data):
    """The shared folder: big.bin and big-0..7.bin (100 MiB each), the listing folders."""
    os.makedirs(data)
    write_random(os.path.join(data, "big.bin"), BIG)
    for index in range(CLIENTS):
        write_random(os.path.join(data, f"big-{index}.bin"), BIG)
    for size in LIST_SIZES:
        folder = os.path.join(data, f"list-{size}")
        os.makedirs(folder)
        for i in range(size):
            open(os.path.join(folder, f"entry-{i:05d}"), "w").close()
    os.sync()  # the page cache keeps the files, the disk is quiet when runs start


def ganesha_conf(work, data):
    path = os.path.join(work, "ganesha.conf")
    with open(path, "w") as f:
        f.write(f"""NFS_CORE_PARAM {{ NFS_Port = {GANESHA_PORT}; MNT_Port = {GANESHA_MOUNT_PORT}; Enable_NLM = false;
  Enable_RQUOTA = false; Protocols = 3; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{ Export_Id = 1; Path = {data}; Pseudo = /data; Access_Type = RW; Squash = No_Root_Squash;
  Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = WARN; }}
""")
    return path


def measure(servers, workloads, runs):
    """Every run: each workload against each server in turn. Returns (raw values per server and
    key, errors per "workload/server"); a failed workload is not run again on that server."""
    raw = {server.name: collections.defaultdict(list) for server in servers}
    errors = {}
    for run in range(runs):
        for workload in workloads:
            for server in servers:
                where = f"{workload}/{server.name}"
                if where in errors:
                    continue
                try:
                    values = WORKLOADS[workload](server, run)
                except Exception as e:
                    errors[where] = str(e) + ("" if server.alive() else f" ({server.name} is no longer running)")
                    log(f"run {run + 1}/{runs} {where} FAILED: {errors[where]}")
                    continue
                for key, value in values.items():
                    raw[server.name][key].append(value)
                log(f"run {run + 1}/{runs} {where}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return raw, errors


def inside(args):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.makedirs("/run/rpcbind", exist_ok=True)
    # In the foreground, so this script holds its PID and stops it at the end.
    rpcbind = subprocess.Popen(["rpcbind", "-f", "-w"])
    wait_port(111, rpcbind, "rpcbind")
    work = tempfile.mkdtemp(prefix="zeronas-nfs-bench-")
    data = os.path.join(work, "data")
    log("writing 900 MiB of test files")
    prepare_data(data)
    binary = os.path.join(REPO, "target", "release", "zeronas-dataplane")
    zeronas = subprocess.Popen([binary, "--root", data, "--http", "127.0.0.1:0", "--nfs", f"127.0.0.1:{ZERONAS_PORT}",
                                "--nfs-client", "127.0.0.1/32,rw,no_root_squash", "--log-format", "json"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ganesha.nfsd", "-L", os.path.join(work, "ganesha.log"), "-f", ganesha_conf(work, data),
                    "-p", "/run/ganesha.pid"], check=True)
    try:
        wait_port(ZERONAS_PORT, zeronas, "zeronas")
        wait_port(GANESHA_PORT, None, "ganesha")
        servers = [Server("zeronas", zeronas.pid, ZERONAS_PORT, "/"),
                   # Ganesha answers MOUNT only on its own port (PROG_UNAVAIL on the NFS port).
                   Server("ganesha", ganesha_pid(), GANESHA_PORT, data, GANESHA_MOUNT_PORT)]
        for server in servers:
            server.client.sequential_read("/big.bin")  # warm the server
        return measure(servers, args.only, args.runs)
    finally:
        zeronas.terminate()
        zeronas.wait()
        stop_daemon(ganesha_pid)
        rpcbind.terminate()
        rpcbind.wait()
        shutil.rmtree(work, ignore_errors=True)


HIGHER, LOWER, NEITHER = "higher", "lower", None


# A goal: (its text, check(zeronas, ganesha, ratio) -> met, or None when its figure is missing).

def ratio_at_least(threshold, text=None):
    """A goal on the ratio column (above 1 favours zeronas)."""
    return (text or f"≥ {threshold}×", lambda z, g, ratio: None if ratio is None else ratio >= threshold)


def zeronas_at_most(threshold):
    """A goal on zeronas's own figure."""
    return (f"zeronas ≤ {threshold}", lambda z, g, ratio: None if z is None else z <= threshold)


PAR = f"{CLIENTS} clients"
# (workload, label, metric, raw key, which way is better, goal or None)
ROWS = [
    ("seq", "sequential read 100 MiB, 1 client", "MB/s", "seq_MBps", HIGHER, None),
    ("seq", "sequential read 100 MiB, 1 client", "server CPU s/GB", "seq_cpu_s_per_GB", LOWER, None),
    ("small", "1,000 × 4 KiB, 1 client", "create+write files/s", "create_ops", HIGHER, None),
    ("small", "1,000 × 4 KiB, 1 client", "stat files/s", "stat_ops", HIGHER, None),
    ("small", "1,000 × 4 KiB, 1 client", "open+read files/s", "read_ops", HIGHER, None),
    ("par-seq", f"{PAR}, sequential read of own 100 MiB", "aggregate MB/s", "par_seq_MBps", HIGHER, ratio_at_least(1.5)),
    ("par-seq", f"{PAR}, sequential read of own 100 MiB", "server CPU s/GB", "par_seq_cpu_s_per_GB", LOWER,
     ratio_at_least(2, "≥ 2× (CPU ≤ 0.5×)")),
    ("par-meta", f"{PAR}, metadata mix", "ops/s", "par_meta_ops", HIGHER, ratio_at_least(1.2)),
    ("qd32", "1 conn, 32 READs outstanding: READs only", "READ p50 ms", "qd_read_p50_ms", LOWER, None),
    ("qd32", "1 conn, 32 READs outstanding: READs only", "READ p99 ms", "qd_read_p99_ms", LOWER, None),
    ("qd32", "1 conn, 32 READs outstanding: READs only", "READs/s", "qd_read_reads_per_s", HIGHER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITEs, no COMMIT", "READ p50 ms", "qd_writes_p50_ms", LOWER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITEs, no COMMIT", "READ p99 ms", "qd_writes_p99_ms", LOWER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITE/COMMIT 64 MiB", "READ p50 ms", "qd_mixed_p50_ms", LOWER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITE/COMMIT 64 MiB", "READ p99 ms", "qd_mixed_p99_ms", LOWER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITE/COMMIT 64 MiB", "READs/s", "qd_mixed_reads_per_s", HIGHER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITE/COMMIT 64 MiB", "WRITE MB/s", "qd_write_MBps", HIGHER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITE/COMMIT 64 MiB", "COMMITs per run", "qd_commits", NEITHER, None),
    ("qd32", "1 conn, 32 READs outstanding + WRITE/COMMIT 64 MiB", "COMMIT ms (median)", "qd_commit_ms", LOWER, None),
    ("qd32", "1 conn, 32 READs outstanding", "READ p99 with WRITE/COMMIT ÷ READs only", "qd_p99_inflation", LOWER,
     zeronas_at_most(1.5)),
    ("qd32", "1 conn, 32 READs outstanding", "READ p99 with WRITE/COMMIT ÷ WRITEs only", "qd_p99_commit_share",
     LOWER, None),
    ("par-rand", f"{PAR}, 4 KiB random READs from cache", "ops/s", "par_rand_ops", HIGHER, ratio_at_least(1.2)),
] + [
    ("listing", f"READDIRPLUS listing of {size:,} entries", "ms", f"list_{size}_ms", LOWER,
     ratio_at_least(1.2) if size == LIST_SIZES[-1] else None) for size in LIST_SIZES
] + [
    ("listing", f"READDIRPLUS listing of {size:,} entries", "µs per entry", f"list_{size}_us_per_entry", LOWER, None)
    for size in LIST_SIZES
] + [
    ("listing", "READDIRPLUS listing", f"µs/entry at {LIST_SIZES[-1]:,} ÷ at {LIST_SIZES[0]:,}", "list_linearity",
     LOWER, zeronas_at_most(1.25)),
]


def median_of(raw, server, key):
    values = raw.get(server, {}).get(key)
    return statistics.median(values) if values else None


def summarize(raw, errors, workloads):
    """One dict per table row: medians, ratio, goal, whether it is met (None: no goal or no figure)."""
    rows = []
    for workload, label, metric, key, better, goal in ROWS:
        if workload not in workloads:
            continue
        z, g = median_of(raw, "zeronas", key), median_of(raw, "ganesha", key)
        ratio = None
        if z and g and better is not NEITHER:
            ratio = z / g if better == HIGHER else g / z
        met = goal[1](z, g, ratio) if goal else None
        rows.append({"workload": workload, "label": label, "metric": metric, "key": key, "zeronas": z, "ganesha": g,
                     "ratio": ratio, "goal": goal[0] if goal else None, "met": met,
                     "errors": {s: errors[f"{workload}/{s}"] for s in ("zeronas", "ganesha") if f"{workload}/{s}" in errors}})
    return rows


def cell(value, row, server):
    if value is not None:
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return "error" if server in row["errors"] else "—"


def report(raw, errors, args):
    rows = summarize(raw, errors, args.only)
    print(f"NFS: medians of {args.runs} runs, libnfs client, same folder, zeronas and Ganesha interleaved")
    print("(ratio: zeronas / Ganesha where higher is better, Ganesha / zeronas where lower is better: above 1 favours zeronas)")
    print("| workload | metric | zeronas | ganesha | ratio | goal | met? |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]] if row["goal"] else ""
        print(f"| {row['label']} | {row['metric']} | {cell(row['zeronas'], row, 'zeronas')} | "
              f"{cell(row['ganesha'], row, 'ganesha')} | {ratio} | {row['goal'] or ''} | {met} |")
    for where, error in errors.items():
        print(f"error: {where}: {error}")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "nfs.json"), "w") as f:
        json.dump({"runs": args.runs, "workloads": args.only, "raw": raw, "errors": errors, "summary": rows}, f, indent=2)


def workload_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown workload {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", type=workload_list, default=list(WORKLOADS),
                        help=f"comma-separated workloads to run (default: all of {','.join(WORKLOADS)})")
    parser.add_argument("--no-build", action="store_true", help="use target/release/zeronas-dataplane as it is")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        raw, errors = inside(args)
        print(json.dumps({"raw": raw, "errors": errors}))
        return
    if os.geteuid() != 0:
        log("nfs bench skipped: it needs root (a private network and mount namespace for rpcbind and Ganesha)")
        return
    ensure_tools()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "zeronas-dataplane"], cwd=REPO, check=True)
    out = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", sys.executable, __file__,
                          "--inside", "--runs", str(args.runs), "--only", ",".join(args.only)],
                         check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    report(result["raw"], result["errors"], args)


if __name__ == "__main__":
    main()
