#!/usr/bin/python3
"""`make chaos`: faults on the network, the disk and the processes, against dataplanes run as
the operator's pod spec says, with real clients (curl, libnfs, the Linux kernel's NFS client in
a QEMU guest); prints a table fault x protocol x outcome.

Run by the Makefile inside a private mount namespace and a PID namespace of its own
(`unshare --mount --pid --fork --kill-child`), as root: the tmpfs, the read-only bind mount and
the FUSE file system it mounts vanish with the mount namespace, and every process it starts
(dataplanes, toxiproxy, faultfs, QEMU, clients) is killed with the PID namespace, even when
the run is stopped from outside.

  chaos.py --toxiproxy BIN --faultfs BIN --dataplane BIN --operator BIN [--long] [--budget S]

Every scenario checks what a demanding user would: each byte a client was told is written is
on disk and identical, no partial file is ever visible under a real name, no upload temp file
outlives a restart, the server keeps serving other clients during the fault, and the
dataplane's connections return to zero. Any lost or corrupt byte fails the run. The table and
one JSON object per scenario go to target/chaos/ (results.json, dataplane logs).
"""
import argparse
import hashlib
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "target" / "chaos"
TOKEN = "chaos-read-write-token"
READ_TOKEN = "chaos-read-only-token"
LIBNFS_CLIENT = REPO / "dataplane" / "tests" / "support" / "libnfs_client.py"
DENY_SENDFILE = REPO / "dataplane" / "tests" / "support" / "deny_sendfile.py"
MiB = 1 << 20


class Failure(Exception):
    """A check of a scenario failed: lost or corrupt data, a crash, a hang."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


def random_bytes(n):
    return os.urandom(n)


def wait_for(what, timeout, probe, interval=0.05):
    """Polls `probe` until it returns a true value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def temps_under(root):
    """Upload temp files (`.zeronas-tmp-*`) anywhere under a share."""
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files if f.startswith(".zeronas-tmp-")]
    return found


def check_whole_or_absent(path, body):
    """An upload the client saw fail may be absent or, if every byte arrived, whole: never
    a part."""
    if path.exists():
        check(path.read_bytes() == body, f"a partial upload is visible as {path.name}")


def nfs_status_moved(before, after, status):
    """NFS calls answered with `status` between two scrapes."""
    return metric(after, "zeronas_nfs_requests_total", status=status) - \
        metric(before, "zeronas_nfs_requests_total", status=status)


def established(port):
    """TCP connections established to a local port (the dataplane's side of them)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


# --- the dataplane, as the operator renders it ------------------------------------------


class PodSpec:
    """The rendered dataplane container: its arguments and the identity it runs with."""

    def __init__(self, operator):
        out = subprocess.run(
            [operator, "render", "-f", str(REPO / "chaos" / "nasvolume.yaml"),
             "--namespace", "chaos", "--cluster-ip", "10.0.0.10"],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"zeronas-operator render failed: {out.stderr}")
        documents = [d for d in yaml.safe_load_all(out.stdout) if d]
        deployment = next(d for d in documents if d.get("kind") == "Deployment")
        volume = next(d for d in documents if d.get("kind") == "PersistentVolume")
        self.mount_options = volume["spec"]["mountOptions"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.args = container["args"]
        pod_ctx = pod.get("securityContext") or {}
        ctx = container.get("securityContext") or {}
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
        check(uid is not None and gid is not None, "the rendered pod names no user and group")
        groups = list(pod_ctx.get("supplementalGroups") or [])
        if pod_ctx.get("fsGroup") is not None:
            groups.append(pod_ctx["fsGroup"])
        caps = (ctx.get("capabilities") or {}).get("add") or []
        check("ALL" in ((ctx.get("capabilities") or {}).get("drop") or []),
              "the rendered container does not drop all capabilities")
        bounding = "-all" + "".join(",+" + c.lower() for c in caps)
        self.setpriv = [
            "setpriv", f"--reuid={uid}", f"--regid={gid}",
            f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
            f"--bounding-set={bounding}", "--inh-caps=-all",
        ]
        if ctx.get("allowPrivilegeEscalation") is False:
            self.setpriv.append("--no-new-privs")
        self.uid = uid


class Dataplane:
    """One dataplane process over `root`, on fixed loopback ports (kept across restarts)."""

    def __init__(self, name, spec, binary, root, wrapper=()):
        self.name = name
        self.root = Path(root)
        self.http_port, self.nfs_port, self.metrics_port = free_port(), free_port(), free_port()
        tokens = WORK / "tokens"
        args = []
        for arg in spec.args:
            if arg == "/data":
                arg = str(self.root)
            elif arg.startswith("/etc/zeronas/http/"):
                arg = str(tokens / arg.rsplit("/", 1)[1])
            elif arg == "0.0.0.0:8080":
                arg = f"127.0.0.1:{self.http_port}"
            elif arg == "0.0.0.0:2049":
                arg = f"127.0.0.1:{self.nfs_port}"
            elif arg == "0.0.0.0:9090":
                arg = f"127.0.0.1:{self.metrics_port}"
            args.append(arg)
        self.command = spec.setpriv + ["--", *wrapper, binary, *args]
        self.log = WORK / f"dataplane-{name}.log"
        self.process = None
        self.starts = 0
        self.backing = None

    def start(self):
        log = open(self.log, "a")
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        ready, _, _ = select.select([self.process.stdout], [], [], 20)
        line = self.process.stdout.readline() if ready else ""
        try:
            listening = json.loads(line)
        except ValueError:
            listening = {}
        check(listening.get("event") == "listening",
              f"dataplane {self.name} did not start ({line!r}); see {self.log}")
        self.starts += 1
        return listening

    def signal(self, sig):
        self.process.send_signal(sig)

    def kill(self):
        """SIGKILL, as the kernel's OOM killer or a node failure would."""
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self):
        return self.process.poll() is None

    def url(self, rel, port=None):
        return f"http://127.0.0.1:{port or self.http_port}/v1/shares/chaos/files/{rel}"

    def nfs_url(self, port=None):
        port = port or self.nfs_port
        return f"nfs://127.0.0.1/nfs?version=3&nfsport={port}&mountport={port}"

    def metrics(self):
        """The /metrics scrape as {series: value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
        series = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    series[name] = float(value)
                except ValueError:
                    pass
        return series

    def serves(self):
        """A direct client (not through the fault) gets a file whole: the server is alive."""
        status, body = http_get(self.url("canary.bin"))
        return status == 200 and body == CANARY

    def connections(self):
        return established(self.http_port) + established(self.nfs_port)


def metric(series, name, **labels):
    """Sum of the series named `name` whose labels include `labels`."""
    total = 0.0
    for key, value in series.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


# --- clients --------------------------------------------------------------------------


def http_get(url, token=TOKEN, timeout=10):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def curl(*args, timeout=30):
    """Runs curl; returns (exit code, HTTP status or 0, stderr)."""
    sink = () if "-o" in args else ("-o", "/dev/null")
    out = subprocess.run(
        ["curl", "-sS", "--http1.1", "-H", f"Authorization: Bearer {TOKEN}", *sink,
         "-w", "%{http_code}", *args],
        capture_output=True, text=True, timeout=timeout)
    code = int(out.stdout[-3:]) if out.stdout[-3:].isdigit() else 0
    return out.returncode, code, out.stderr.strip()


def download_resuming(url, dest, size, attempts, max_time=20):
    """Downloads with `curl -C -` (a Range request from where the last attempt stopped)
    until the file is whole. Returns the number of attempts and the errors curl reported."""
    if dest.exists():
        dest.unlink()
    errors = []
    for attempt in range(1, attempts + 1):
        rc, status, err = curl("-C", "-", "-o", str(dest), "--max-time", str(max_time), url,
                               timeout=max_time + 5)
        have = dest.stat().st_size if dest.exists() else 0
        if rc == 0 and status in (200, 206) and have == size:
            return attempt, errors
        errors.append(f"curl {rc}/{status}: {err[:80]}")
        check(have <= size, f"download grew past the file: {have} > {size}")
    raise Failure(f"download not whole after {attempts} attempts: {errors[-3:]}")


def upload(url, src, max_time=20, extra=()):
    return curl("-T", str(src), "--max-time", str(max_time), *extra, url, timeout=max_time + 5)


class NfsClient:
    """libnfs (Debian's libnfs13) through `libnfs_client.py`: one mount, one command at a
    time, each with a deadline, so a hung client fails the scenario instead of the run."""

    def __init__(self, url):
        self.process = subprocess.Popen(["/usr/bin/python3", str(LIBNFS_CLIENT), url],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.lines = queue.Queue()
        self.stuck = False
        threading.Thread(target=self._read, daemon=True).start()
        try:
            mounted = self._line(20)
            check(mounted.get("ok"), f"libnfs mount of {url}: {mounted}")
        except Failure:
            self.process.kill()
            self.process.wait()
            raise

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def _line(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise Failure(f"libnfs gave no answer in {timeout} s") from None
        check(line, "libnfs client exited")
        return json.loads(line)

    def run(self, command, timeout=30):
        """One command; a call with no answer in `timeout` s is an error (the client is then
        stuck in libnfs, and `close` kills it)."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        try:
            return self._line(timeout)
        except Failure as e:
            self.stuck = True
            return {"ok": False, "error": str(e)}

    def close(self):
        if self.stuck and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def nfs_write_chunks(client, name, data, chunk, timeout=30):
    """pwrite + fsync (WRITE then COMMIT) chunk by chunk; returns the bytes acknowledged
    (committed) and the errors seen. Stops at the first error."""
    opened = client.run(f"create {name} /{name}", timeout)
    if not opened.get("ok"):
        return 0, [f"open: {opened.get('error')}"]
    done = 0
    while done < len(data):
        piece = data[done:done + chunk]
        out = client.run(f"pwrite {name} {done} {piece.hex()}", timeout)
        if not out.get("ok"):
            return done, [f"{out.get('error', '?')} (rc {out.get('rc')})"]
        done += len(piece)
    return done, []


def nfs_read_all(client, name, size, chunk=256 * 1024, timeout=30):
    opened = client.run(f"open {name} /{name}", timeout)
    if not opened.get("ok"):
        return b"", f"open: {opened.get('error')}"
    data = b""
    while len(data) < size:
        out = client.run(f"pread {name} {len(data)} {min(chunk, size - len(data))}", timeout)
        if not out.get("ok"):
            return data, f"{out.get('error', '?')} (rc {out.get('rc')})"
        piece = bytes.fromhex(out["data"])
        if not piece:
            break
        data += piece
    return data, None


def nfs_create(dataplane, rel, size):
    """A file for the NFS clients, written on the server's disk (folder `nfs/`)."""
    data = random_bytes(size)
    path = (dataplane.backing or dataplane.root) / "nfs" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


# --- toxiproxy ------------------------------------------------------------------------


class Toxiproxy:
    """Shopify's toxiproxy (built from its Go module), driven through its HTTP API."""

    def __init__(self, binary):
        self.port = free_port()
        self.log = open(WORK / "toxiproxy.log", "w")
        self.process = subprocess.Popen([binary, "-host", "127.0.0.1", "-port", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for("toxiproxy's API", 10, lambda: self._ping())
        except BaseException:
            self.stop()
            raise

    def _ping(self):
        try:
            self.api("GET", "/version")
            return True
        except (OSError, ValueError):
            return False

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as r:
            text = r.read()
        try:
            return json.loads(text) if text else None
        except ValueError:
            return text.decode()  # GET /version answers plain text

    def proxy(self, name, upstream_port):
        listen = free_port()
        self.api("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{listen}",
                                      "upstream": f"127.0.0.1:{upstream_port}",
                                      "enabled": True})
        return listen

    def toxic(self, proxy, kind, stream, **attributes):
        name = f"{kind}_{stream}"
        self.api("POST", f"/proxies/{proxy}/toxics",
                 {"name": name, "type": kind, "stream": stream, "toxicity": 1.0,
                  "attributes": attributes})
        return name

    def clear(self):
        """Removes every toxic (and re-enables the proxies)."""
        self.api("POST", "/reset")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# --- the run --------------------------------------------------------------------------

CANARY = os.urandom(64 * 1024)


class Chaos:
    def __init__(self, options):
        self.options = options
        self.long = options.long
        self.file_size = (64 if self.long else 4) * MiB
        self.upload_size = (32 if self.long else 2) * MiB
        self.rows = []
        self.spec = PodSpec(options.operator)
        self.dataplanes = []
        self.mounts = []
        self.helpers = []
        self.kernel_killed_at = 0
        self.kernel_resets = 0
        self.writes_before_kill = 0
        self.commits_before_kill = 0
        # Seconds of one-time set-up (fetching the guest's kernel) not held to the budget.
        self.outside_budget = 0.0

    # helpers -----------------------------------------------------------------------

    def dataplane(self, name, root=None, wrapper=(), files=True):
        root = Path(root or WORK / f"share-{name}")
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        if files:
            (root / "canary.bin").write_bytes(CANARY)
            (root / "nfs").mkdir(exist_ok=True)
        dp = Dataplane(name, self.spec, self.options.dataplane, root, wrapper)
        dp.start()
        self.dataplanes.append(dp)
        return dp

    def scenario(self, fault, protocol, run):
        """Runs one scenario; records its row whether it passed or not."""
        row = {"fault": fault, "protocol": protocol, "verified": 0, "client_errors": [],
               "recovery_s": None, "ok": False, "detail": ""}
        started = time.monotonic()
        try:
            run(row)
            row["ok"] = True
        except Failure as e:
            row["detail"] = str(e)
        except Exception as e:  # a bug in a scenario is a failed row, not a lost table
            row["detail"] = f"{type(e).__name__}: {e}"
        row["seconds"] = round(time.monotonic() - started, 2)
        self.rows.append(row)
        mark = "ok  " if row["ok"] else "FAIL"
        print(f"  {mark} {fault:<34} {protocol:<5} {row['seconds']:6.2f} s  {row['detail']}",
              flush=True)

    def settle(self, dp):
        """After a fault: the server answers a direct client and holds no connection."""
        check(dp.alive(), f"dataplane {dp.name} exited")
        check(dp.serves(), f"dataplane {dp.name} no longer serves a direct client")
        wait_for(f"{dp.name}'s connections to return to zero", 10,
                 lambda: dp.connections() == 0, 0.1)
        check(not temps_under(dp.root), f"upload temp files left: {temps_under(dp.root)}")

    def put_file(self, dp, rel, size):
        """A file placed on the share's disk (under FUSE: in its backing folder)."""
        data = random_bytes(size)
        path = (dp.backing or dp.root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def source(self, name, size):
        path = WORK / "client" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = random_bytes(size)
        path.write_bytes(data)
        return path, data

    # network -----------------------------------------------------------------------

    def network(self):
        dp = self.dataplane("network")
        proxy = Toxiproxy(self.options.toxiproxy)
        self.helpers.append(proxy)
        http_port = proxy.proxy("http", dp.http_port)
        nfs_port = proxy.proxy("nfs", dp.nfs_port)
        before = dp.metrics()
        faults = [
            # (name, toxics, what gets through: "all", "cut" (some bytes per connection,
            # then it closes) or "none" (a dead network))
            ("latency 40 ms ± 30 ms", [("latency", "downstream", {"latency": 40, "jitter": 30}),
                                       ("latency", "upstream", {"latency": 40, "jitter": 30})],
             "all"),
            ("bandwidth 4 MB/s", [("bandwidth", "downstream", {"rate": 4096}),
                                  ("bandwidth", "upstream", {"rate": 4096})], "all"),
            ("slicer 64 B segments", [("slicer", "downstream",
                                       {"average_size": 64, "size_variation": 48, "delay": 0}),
                                      ("slicer", "upstream",
                                       {"average_size": 64, "size_variation": 48, "delay": 0})],
             "all"),
            ("limit_data 1 MiB", [("limit_data", "downstream", {"bytes": MiB}),
                                  ("limit_data", "upstream", {"bytes": MiB})], "cut"),
            # toxiproxy's reset_peer passes nothing the server sends and resets the connection
            # 150 ms after the server first sends.
            ("reset_peer after 150 ms", [("reset_peer", "downstream", {"timeout": 150})], "none"),
            ("timeout (black hole)", [("timeout", "downstream", {"timeout": 0})], "none"),
        ]
        served = dp.root / "net.bin"
        data = self.put_file(dp, "net.bin", self.file_size)
        for name, toxics, passes in faults:
            self.scenario(name, "http",
                          lambda row: self.network_http(row, dp, proxy, http_port, toxics,
                                                        passes, served, data))
            self.scenario(name, "nfs",
                          lambda row: self.network_nfs(row, dp, proxy, nfs_port, toxics,
                                                       passes))
        after = dp.metrics()
        # curl sends `Expect: 100-continue` with bodies over 1 MiB: each such upload leaves
        # the zero-copy front end for hyper, and the counter says so with its reason.
        self.scenario("metrics after network faults", "http",
                      lambda row: self.network_metrics(row, before, after))

    def network_http(self, row, dp, proxy, port, toxics, passes, served, data):
        proxy.clear()
        for kind, stream, attrs in toxics:
            proxy.toxic("http", kind, stream, **attrs)
        dest = WORK / "client" / "download.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = dp.url("net.bin", port)
        target = f"up-{toxics[-1][0]}.bin"
        src, body = self.source("upload.bin", self.upload_size)
        if passes == "none":
            # Nothing gets through (resets, or a black hole until the client's own timeout):
            # the server keeps serving others meanwhile; once the network heals, the same
            # requests succeed.
            rc, status, err = curl("-o", str(dest), "--max-time", "1", url, timeout=10)
            check(rc != 0, "a download through a black hole succeeded")
            row["client_errors"].append(f"curl {rc}: {err[:60]}")
            rc, status, err = upload(dp.url(target, port), src, max_time=1)
            check(rc != 0, "an upload through a black hole succeeded")
            row["client_errors"].append(f"curl {rc}: {err[:60]}")
            check(dp.serves(), "the server stopped serving others during the black hole")
            check_whole_or_absent(dp.root / target, body)
            proxy.clear()
            healed = time.monotonic()
            attempts, errors = download_resuming(url, dest, len(data), 3)
            rc, status, err = upload(dp.url(target, port), src)
            check(rc == 0 and status in (200, 201, 204), f"upload after healing: {status} {err}")
            row["recovery_s"] = round(time.monotonic() - healed, 3)
        else:
            attempts, errors = download_resuming(url, dest, len(data), len(data) // MiB + 5)
            row["client_errors"] += errors
            if attempts > 1:
                row["detail"] = f"download resumed {attempts - 1}x with Range"
            if passes == "all":
                rc, status, err = upload(dp.url(target, port), src)
                check(rc == 0 and status in (200, 201, 204), f"upload: {rc} {status} {err}")
            else:
                # The fault cuts every upload short: the client sees it fail; the name shows
                # nothing partial (absent: it never existed); the temp file goes with the
                # connection. After the fault, a retry succeeds.
                for _ in range(2):
                    rc, status, err = upload(dp.url(target, port), src, max_time=10)
                    check(rc != 0 or status >= 400, "an upload through the fault succeeded")
                    row["client_errors"].append(f"curl {rc}/{status}: {err[:60]}")
                    check_whole_or_absent(dp.root / target, body)
                proxy.clear()
                healed = time.monotonic()
                rc, status, err = upload(dp.url(target, port), src)
                check(rc == 0 and status in (200, 201, 204), f"retried upload: {status} {err}")
                row["recovery_s"] = round(time.monotonic() - healed, 3)
        check(dest.read_bytes() == data, "downloaded bytes differ from the file")
        check((dp.root / target).read_bytes() == body, "uploaded bytes differ on disk")
        check(served.read_bytes() == data, "the served file changed")
        row["verified"] = len(data) + len(body)
        proxy.clear()
        self.settle(dp)

    def network_nfs(self, row, dp, proxy, port, toxics, passes):
        proxy.clear()
        name = f"nfs-{toxics[-1][0]}.bin"
        size = MiB if not self.long else 8 * MiB
        read_data = nfs_create(dp, f"r-{name}", size)
        body = random_bytes(size)
        # Mounted before the fault (a mount is not what is tested); every call after it
        # goes through the faulty network.
        client = NfsClient(dp.nfs_url(port))
        try:
            for kind, stream, attrs in toxics:
                proxy.toxic("nfs", kind, stream, **attrs)
            timeout = 3 if passes != "all" else 60
            # A call with no answer (libnfs over TCP waits for its reply) counts as an
            # error; what matters is that nothing acknowledged is lost.
            done, errors = nfs_write_chunks(client, name, body, 256 * 1024, timeout)
            row["client_errors"] += errors
            got, read_error = (b"", None)
            if not errors:
                got, read_error = nfs_read_all(client, f"r-{name}", size, timeout=timeout)
                if read_error:
                    row["client_errors"].append(read_error)
        finally:
            client.close()
        on_disk = (dp.root / "nfs" / name).read_bytes() if (dp.root / "nfs" / name).exists() else b""
        check(on_disk[:done] == body[:done],
              f"{done} acknowledged bytes are not all on disk intact")
        if passes == "all":
            check(done == size and not row["client_errors"], f"NFS calls failed: {row['client_errors']}")
            check(got == read_data, "bytes read over NFS differ from the file")
            row["verified"] = size * 2
        else:
            proxy.clear()
            healed = time.monotonic()
            # After the fault a new client (as a remount, or libnfs's own reconnect) reads
            # and writes everything whole.
            client = NfsClient(dp.nfs_url(port))
            try:
                done, errors = nfs_write_chunks(client, name, body, 256 * 1024)
                check(done == size, f"NFS write after healing: {errors}")
                got, read_error = nfs_read_all(client, f"r-{name}", size)
                check(got == read_data, f"NFS read after healing: {read_error}")
            finally:
                client.close()
            row["recovery_s"] = round(time.monotonic() - healed, 3)
            check((dp.root / "nfs" / name).read_bytes() == body, "NFS-written bytes differ")
            row["verified"] = size * 2
        proxy.clear()
        self.settle(dp)

    def network_metrics(self, row, before, after):
        expect = metric(after, "zeronas_zero_copy_fallback_total", protocol="http",
                        reason="expect_continue") - metric(before, "zeronas_zero_copy_fallback_total",
                                                           protocol="http", reason="expect_continue")
        row["detail"] = f"expect_continue fallbacks +{int(expect)}"
        check(expect >= 1, "uploads with Expect: 100-continue were not counted as fallbacks")
        errors = metric(after, "zeronas_http_request_duration_seconds_count", status_class="5xx")
        check(errors == 0, f"the server answered {errors} requests with 5xx during network faults")

    # processes ---------------------------------------------------------------------

    def processes(self):
        dp = self.dataplane("process")
        self.scenario("SIGKILL during an upload", "http", lambda row: self.kill_upload(row, dp))
        self.scenario("SIGKILL between NFS writes", "nfs", lambda row: self.kill_nfs(row, dp))
        self.scenario("SIGSTOP 2 s, SIGCONT", "http", lambda row: self.stop_http(row, dp))
        self.scenario("SIGSTOP 2 s, SIGCONT", "nfs", lambda row: self.stop_nfs(row, dp))

    def kill_upload(self, row, dp):
        old = self.put_file(dp, "victim.bin", MiB)
        size = (256 if self.long else 32) * MiB
        src, body = self.source("big-upload.bin", size)
        curl_run = subprocess.Popen(
            ["curl", "-sS", "--http1.1", "-H", f"Authorization: Bearer {TOKEN}", "-T", str(src),
             "--limit-rate", "16M", "-o", "/dev/null", dp.url("victim.bin")],
            stderr=subprocess.PIPE, text=True)
        try:
            wait_for("the upload's temp file", 10, lambda: temps_under(dp.root))
            time.sleep(0.3)
            dp.kill()
            killed = time.monotonic()
            curl_run.wait(timeout=20)
        finally:
            if curl_run.poll() is None:
                curl_run.kill()
                curl_run.wait()
        row["client_errors"].append(f"curl {curl_run.returncode}: {curl_run.stderr.read().strip()[:60]}")
        check(curl_run.returncode != 0, "curl reported success for an upload cut by SIGKILL")
        check((dp.root / "victim.bin").read_bytes() == old,
              "the old file is not whole after a SIGKILL during its replacement")
        left = temps_under(dp.root)
        check(left, "SIGKILL left no temp file (the upload never started?)")
        dp.start()
        wait_for("the restarted dataplane to serve", 10, dp.serves)
        row["recovery_s"] = round(time.monotonic() - killed, 3)
        check(not temps_under(dp.root), f"temp files survived the restart: {temps_under(dp.root)}")
        scans = [json.loads(line) for line in open(dp.log) if '"share scanned"' in line]
        removed = scans[-1].get("stale_temps_removed", 0) if scans else 0
        check(removed == len(left), f"the start-up scan logged {removed} stale temps removed, "
                                    f"want {len(left)}")
        rc, status, err = upload(dp.url("victim.bin"), src, max_time=60)
        check(rc == 0 and status in (200, 201, 204), f"re-upload: {status} {err}")
        check((dp.root / "victim.bin").read_bytes() == body, "re-uploaded bytes differ")
        row["verified"] = len(old) + size
        row["detail"] = f"{len(left)} temp file(s) removed at restart (logged)"
        self.settle(dp)

    def kill_nfs(self, row, dp):
        size = (32 if self.long else 4) * MiB
        body = random_bytes(size)
        chunk = 256 * 1024
        client = NfsClient(dp.nfs_url())
        try:
            half, errors = nfs_write_chunks(client, "killed.bin", body[:size // 2], chunk)
            check(half == size // 2 and not errors, f"writes before the kill: {errors}")
            dp.kill()
            killed = time.monotonic()
            check((dp.root / "nfs" / "killed.bin").read_bytes() == body[:half],
                  "committed bytes are not on disk after SIGKILL")
            dp.start()
            # The same client, the same file handle: libnfs reconnects to the new process,
            # whose handles are the same (no ESTALE after a restart).
            out = client.run(f"pwrite killed.bin {half} {body[half:half + chunk].hex()}", 30)
            check(out.get("ok"), f"the same handle after the restart: {out}")
            row["recovery_s"] = round(time.monotonic() - killed, 3)
            done = half + chunk
            while done < size:
                out = client.run(f"pwrite killed.bin {done} {body[done:done + chunk].hex()}", 30)
                check(out.get("ok"), f"write after the restart: {out}")
                done += chunk
        finally:
            client.close()
        check((dp.root / "nfs" / "killed.bin").read_bytes() == body, "NFS file differs after restart")
        row["verified"] = size
        self.settle(dp)

    def stop_http(self, row, dp):
        # Bigger than the loopback socket buffers, read at 8 MB/s: the client is still
        # waiting for bytes while the server is stopped.
        data = self.put_file(dp, "paused.bin", 32 * MiB)
        dest = WORK / "client" / "paused.bin"
        run = subprocess.Popen(
            ["curl", "-sS", "--http1.1", "-H", f"Authorization: Bearer {TOKEN}",
             "--limit-rate", "8M", "-o", str(dest), dp.url("paused.bin")],
            stderr=subprocess.PIPE, text=True)
        try:
            wait_for("the download to start", 10,
                     lambda: dest.exists() and dest.stat().st_size > 0)
            dp.signal(signal.SIGSTOP)
            time.sleep(2)
            stalled = dest.stat().st_size
            time.sleep(0.2)
            check(dest.stat().st_size == stalled, "bytes kept coming from a stopped server")
            dp.signal(signal.SIGCONT)
            resumed = time.monotonic()
            run.wait(timeout=30)
        finally:
            dp.signal(signal.SIGCONT)
            if run.poll() is None:
                run.kill()
                run.wait()
        row["detail"] = f"client stalled at {stalled / MiB:.1f} MiB until SIGCONT"
        row["recovery_s"] = round(time.monotonic() - resumed, 3)
        check(run.returncode == 0, f"the download failed across SIGSTOP: {run.stderr.read()}")
        check(dest.read_bytes() == data, "downloaded bytes differ after SIGSTOP")
        row["verified"] = len(data)
        self.settle(dp)

    def stop_nfs(self, row, dp):
        data = nfs_create(dp, "paused.bin", MiB)
        client = NfsClient(dp.nfs_url())
        try:
            check(client.run("open p /paused.bin").get("ok"), "open")
            # (the finally below sends SIGCONT whatever happens)
            dp.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            # The call waits for the stopped server (a hard mount's behaviour), and returns
            # once it continues.
            client.process.stdin.write(f"pread p 0 {MiB}\n")
            client.process.stdin.flush()
            time.sleep(2)
            check(client.lines.empty(), "a READ was answered by a stopped server")
            dp.signal(signal.SIGCONT)
            resumed = time.monotonic()
            out = client._line(30)
            row["recovery_s"] = round(time.monotonic() - resumed, 3)
            check(out.get("ok") and bytes.fromhex(out["data"]) == data,
                  f"READ across SIGSTOP: {str(out)[:80]}")
            row["detail"] = f"READ waited {time.monotonic() - stopped:.1f} s"
        finally:
            dp.signal(signal.SIGCONT)
            client.close()
        row["verified"] = len(data)
        self.settle(dp)

    # disks -------------------------------------------------------------------------

    def mount(self, *args):
        subprocess.run(["mount", *args], check=True)
        self.mounts.append(args[-1])

    def disks(self):
        # A share on a small tmpfs that fills up.
        full = WORK / "share-full"
        full.mkdir(parents=True, exist_ok=True)
        self.mount("-t", "tmpfs", "-o", "size=16m,mode=0755", "chaos-full", str(full))
        dp = self.dataplane("full", full)
        self.scenario("tmpfs full (ENOSPC)", "http", lambda row: self.full_http(row, dp))
        self.scenario("tmpfs full (ENOSPC)", "nfs", lambda row: self.full_nfs(row, dp))
        # A share whose folder becomes read-only underneath (a bind mount remounted ro).
        ro = WORK / "share-rofs"
        ro.mkdir(parents=True, exist_ok=True)
        self.mount("--bind", str(ro), str(ro))
        dp = self.dataplane("rofs", ro)
        self.scenario("read-only underneath (EROFS)", "http", lambda row: self.rofs(row, dp, "http"))
        self.scenario("read-only underneath (EROFS)", "nfs", lambda row: self.rofs(row, dp, "nfs"))
        # I/O errors from a FUSE pass-through that fails chosen reads and writes.
        backing, mounted = WORK / "eio-backing", WORK / "share-eio"
        backing.mkdir(parents=True, exist_ok=True)
        mounted.mkdir(parents=True, exist_ok=True)
        os.chmod(backing, 0o755)
        fuse = subprocess.Popen([self.options.faultfs, "-fail-reads-from", str(MiB),
                                 str(backing), str(mounted)], stdout=subprocess.PIPE, text=True)
        self.helpers.append(fuse)
        check(fuse.stdout.readline().strip() == "mounted", "faultfs did not mount")
        self.mounts.append(str(mounted))
        dp = self.dataplane("eio", mounted, files=False)
        dp.backing = backing
        (backing / "canary.bin").write_bytes(CANARY)
        (backing / "nfs").mkdir(exist_ok=True)
        self.scenario("EIO from the disk (FUSE)", "http", lambda row: self.eio_http(row, dp))
        self.scenario("EIO from the disk (FUSE)", "nfs", lambda row: self.eio_nfs(row, dp))
        # sendfile refused by the kernel: the zero-copy path degrades to copies, counted.
        dp = self.dataplane("nosendfile", wrapper=("/usr/bin/python3", str(DENY_SENDFILE)))
        self.scenario("sendfile refused (seccomp)", "both", lambda row: self.no_sendfile(row, dp))

    def full_http(self, row, dp):
        keep = self.put_file(dp, "keep.bin", 4 * MiB)
        src, body = self.source("too-big.bin", 16 * MiB)
        before = dp.metrics()
        rc, status, err = upload(dp.url("too-big.bin"), src)
        row["client_errors"].append(f"HTTP {status}")
        check(status == 507, f"a PUT larger than the free space: {status}, want 507")
        check(not (dp.root / "too-big.bin").exists(), "a partial upload became visible")
        check((dp.root / "keep.bin").read_bytes() == keep, "an existing file changed")
        check(not temps_under(dp.root), "the failed upload's temp file is left")
        # Space freed: the same upload of a smaller file succeeds.
        os.unlink(dp.root / "keep.bin")
        freed = time.monotonic()
        src, body = self.source("fits.bin", 8 * MiB)
        rc, status, err = upload(dp.url("fits.bin"), src)
        check(rc == 0 and status in (200, 201), f"a PUT after space was freed: {status} {err}")
        row["recovery_s"] = round(time.monotonic() - freed, 3)
        check((dp.root / "fits.bin").read_bytes() == body, "uploaded bytes differ")
        after = dp.metrics()
        full = metric(after, "zeronas_http_requests_total", code="507") - \
            metric(before, "zeronas_http_requests_total", code="507")
        check(full >= 1, "the 507 was not counted in zeronas_http_requests_total")
        os.unlink(dp.root / "fits.bin")
        row["verified"] = len(keep) + len(body)
        self.settle(dp)

    def full_nfs(self, row, dp):
        keep = nfs_create(dp, "keep.bin", 2 * MiB)
        body = random_bytes(20 * MiB)
        before = dp.metrics()
        client = NfsClient(dp.nfs_url())
        try:
            acked, errors = nfs_write_chunks(client, "fill.bin", body, MiB)
            row["client_errors"] += errors
            # libnfs 4.0 garbles pwrite's error (message "\x1c", i.e. 28, and rc -14); the
            # server's own count below says what it answered.
            check(errors, "a write past the free space succeeded")
            on_disk = (dp.root / "nfs" / "fill.bin").read_bytes()
            check(on_disk[:acked] == body[:acked], "acknowledged bytes are not on disk intact")
            check((dp.root / "nfs" / "keep.bin").read_bytes() == keep, "an existing file changed")
            out = client.run("unlink /fill.bin")
            check(out.get("ok"), f"unlink over NFS to free space: {out}")
            freed = time.monotonic()
            done, errors = nfs_write_chunks(client, "again.bin", body[:4 * MiB], MiB)
            check(done == 4 * MiB, f"writes after space was freed: {errors}")
            row["recovery_s"] = round(time.monotonic() - freed, 3)
        finally:
            client.close()
        check((dp.root / "nfs" / "again.bin").read_bytes() == body[:4 * MiB], "NFS bytes differ")
        answered = nfs_status_moved(before, dp.metrics(), "nospc")
        check(answered >= 1, "the server answered no NFS3ERR_NOSPC")
        row["client_errors"] = [f"NFS3ERR_NOSPC x{int(answered)}"]
        row["verified"] = len(keep) + acked + 4 * MiB
        row["detail"] = f"{acked / MiB:.0f} MiB acknowledged before NOSPC"
        self.settle(dp)

    def rofs(self, row, dp, protocol):
        data = self.put_file(dp, "nfs/ro.bin", MiB)
        src, body = self.source("ro-upload.bin", MiB)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dp.root)], check=True)
        try:
            if protocol == "http":
                answer = WORK / "client" / "rofs-answer.json"
                rc, status, err = upload(dp.url("new.bin"), src, extra=("-o", str(answer)))
                row["client_errors"].append(f"HTTP {status}")
                check(status == 403, f"a PUT on a read-only file system: {status}, want 403")
                error = json.loads(answer.read_text())
                check(error.get("code") == "read_only" and "read-only" in error.get("message", ""),
                      f"the 403's body: {error}")
                status, got = http_get(dp.url("nfs/ro.bin"))
                check(status == 200 and got == data, "reads stopped on a read-only file system")
            else:
                before = dp.metrics()
                client = NfsClient(dp.nfs_url())
                try:
                    done, errors = nfs_write_chunks(client, "new.bin", body, MiB)
                    row["client_errors"] += errors
                    answered = nfs_status_moved(before, dp.metrics(), "rofs")
                    check(answered >= 1, "the server answered no NFS3ERR_ROFS")
                    row["client_errors"] = [f"NFS3ERR_ROFS x{int(answered)}"]
                    check(done == 0 and errors and "ROFS" in errors[0].upper(),
                          f"an NFS write on a read-only file system: {errors}, want NFS3ERR_ROFS")
                    got, err = nfs_read_all(client, "ro.bin", MiB)
                    check(got == data, f"NFS reads stopped on a read-only file system: {err}")
                finally:
                    client.close()
        finally:
            subprocess.run(["mount", "-o", "remount,bind,rw", str(dp.root)], check=True)
        healed = time.monotonic()
        if protocol == "http":
            rc, status, err = upload(dp.url("new.bin"), src)
            check(rc == 0 and status in (200, 201, 204), f"PUT after rw again: {status} {err}")
            check((dp.root / "new.bin").read_bytes() == body, "uploaded bytes differ")
        else:
            client = NfsClient(dp.nfs_url())
            try:
                done, errors = nfs_write_chunks(client, "new.bin", body, MiB)
                check(done == len(body), f"NFS write after rw again: {errors}")
            finally:
                client.close()
            check((dp.root / "nfs" / "new.bin").read_bytes() == body, "NFS bytes differ")
        row["recovery_s"] = round(time.monotonic() - healed, 3)
        row["verified"] = len(data) + len(body)
        self.settle(dp)

    def eio_http(self, row, dp):
        good = self.put_file(dp, "good.bin", 3 * MiB)
        bad = self.put_file(dp, "bad-eio.bin", 3 * MiB)
        dest = WORK / "client" / "eio.bin"
        rc, status, err = curl("-o", str(dest), dp.url("bad-eio.bin"))
        row["client_errors"].append(f"curl {rc}/{status}: {err[:50]}")
        check(rc != 0, "curl reported success for a file that could not be read")
        got = dest.read_bytes() if dest.exists() else b""
        check(bad.startswith(got), "the bytes before the I/O error are not the file's")
        check(len(got) < len(bad), "a whole body came from a failing disk")
        status, body = http_get(dp.url("good.bin"))
        check(status == 200 and body == good, "a healthy file next to a failing one")
        src, upload_body = self.source("eio-up.bin", MiB)
        rc, status, err = upload(dp.url("eio-dir/up.bin"), src)
        row["client_errors"].append(f"PUT {status}")
        check(status == 500, f"a PUT whose writes fail with EIO: {status}, want 500")
        check(not (dp.root / "eio-dir" / "up.bin").exists(), "a failed upload became visible")
        rc, status, err = upload(dp.url("ok-dir/up.bin"), src)
        check(status in (200, 201), f"a PUT beside the failing folder: {status}")
        check((dp.root / "ok-dir" / "up.bin").read_bytes() == upload_body, "uploaded bytes differ")
        row["verified"] = len(good) + len(got) + len(upload_body)
        row["detail"] = f"{len(got)} of {len(bad)} bytes before EIO"
        self.settle(dp)

    def eio_nfs(self, row, dp):
        bad = nfs_create(dp, "bad-eio.bin", 3 * MiB)
        good = nfs_create(dp, "good.bin", 3 * MiB)
        before = dp.metrics()
        client = NfsClient(dp.nfs_url())
        try:
            # The first READ that meets the bad block has its reply head sent already (the
            # data goes by sendfile after it): the server cuts the connection and marks the
            # file. A kernel client resends the READ on a new connection; libnfs 4.0 does not
            # (its call never returns), so the test mounts again, as an application would.
            got, err = nfs_read_all(client, "bad-eio.bin", len(bad), timeout=3)
            check(err and "no answer" in err, f"the first READ past a bad block: {err}")
            check(bad.startswith(got), "the bytes before the I/O error are not the file's")
            client.close()
            client = NfsClient(dp.nfs_url())
            got, err = nfs_read_all(client, "bad-eio.bin", len(bad))
            # libnfs 4.0 garbles NFS errors of pread/pwrite (an empty message, rc -EFAULT);
            # the server's count says what it answered.
            check(err, "reading past a bad block succeeded")
            check(nfs_status_moved(before, dp.metrics(), "io") >= 1,
                  "the server did not answer NFS3ERR_IO")
            row["client_errors"] = ["1st READ: connection cut", "READ again: NFS3ERR_IO"]
            check(bad.startswith(got), "the bytes before the I/O error are not the file's")
            moved = metric(dp.metrics(), "zeronas_zero_copy_fallback_total", protocol="nfs",
                           reason="read_error")
            check(moved >= 1, "READs of the marked file were not counted as read_error")
            got_good, err = nfs_read_all(client, "good.bin", len(good))
            check(got_good == good, f"a healthy file next to a failing one: {err}")
            (dp.backing / "nfs" / "eio-dir").mkdir(exist_ok=True)
            done, errors = nfs_write_chunks(client, "eio-dir/w.bin", random_bytes(MiB), 256 * 1024)
            check(done == 0 and errors, f"writes that fail with EIO succeeded: {errors}")
        finally:
            client.close()
        answered = nfs_status_moved(before, dp.metrics(), "io")
        check(answered >= 2, "the server did not answer NFS3ERR_IO to the READ and the WRITE")
        row["client_errors"].append("WRITE: NFS3ERR_IO")
        row["verified"] = len(good) + len(got)
        self.settle(dp)

    def no_sendfile(self, row, dp):
        data = self.put_file(dp, "nfs/copied.bin", self.file_size)
        before = dp.metrics()
        status, body = http_get(dp.url("nfs/copied.bin"))
        check(status == 200 and body == data, "a download over the copy path")
        client = NfsClient(dp.nfs_url())
        try:
            got, err = nfs_read_all(client, "copied.bin", len(data), chunk=MiB)
            check(got == data, f"an NFS read over the copy path: {err}")
        finally:
            client.close()
        after = dp.metrics()
        parts = []
        for protocol in ("http", "nfs"):
            moved = metric(after, "zeronas_zero_copy_fallback_total", protocol=protocol,
                           reason="sendfile_unsupported") - metric(
                before, "zeronas_zero_copy_fallback_total", protocol=protocol,
                reason="sendfile_unsupported")
            timed = metric(after, "zeronas_fallback_duration_seconds_count", protocol=protocol) - \
                metric(before, "zeronas_fallback_duration_seconds_count", protocol=protocol)
            check(moved >= 1, f"{protocol}: sendfile_unsupported did not move")
            check(timed >= 1, f"{protocol}: zeronas_fallback_duration_seconds recorded nothing")
            parts.append(f"{protocol} sendfile_unsupported +{int(moved)}, timed +{int(timed)}")
        row["detail"] = "; ".join(parts)
        row["verified"] = 2 * len(data)
        self.settle(dp)

    # the kernel client ---------------------------------------------------------------

    # sigkill last: its row counts every byte the restarted process received as its own.
    KERNEL_FAULTS = ("latency", "bandwidth", "slicer", "reset_peer", "sigstop", "sigkill")

    def kernel(self):
        """Debian's kernel in QEMU (as `make kernel-client` boots it) mounts a dataplane
        through toxiproxy with the rendered PV's options and writes and reads a file under
        each fault; the host applies the fault when the guest announces it."""
        # Fetching Debian's kernel (once per machine, shared with make kernel-client) is not
        # part of the run's budget.
        fetch_started = time.monotonic()
        prepare = subprocess.run([str(REPO / "e2e/kernel/prepare.sh")], capture_output=True,
                                 text=True, timeout=600)
        self.outside_budget += time.monotonic() - fetch_started
        check(prepare.returncode == 0, f"e2e/kernel/prepare.sh: {prepare.stderr[-300:]}")
        kernel_dir = Path(prepare.stdout.strip())
        dp = self.dataplane("kernel")
        proxy = Toxiproxy(self.options.toxiproxy)
        self.helpers.append(proxy)
        port = proxy.proxy("knfs", dp.nfs_port)
        options = ",".join(f"port={port}" if o.startswith("port=") else
                           f"mountport={port}" if o.startswith("mountport=") else o
                           for o in self.spec.mount_options)
        guest = WORK / "guest"
        guest.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "chaos/guest.sh", guest / "workload.sh")
        (guest / "config.sh").write_text(
            f"OPTS='{options}'\nFAULTS='{' '.join(self.KERNEL_FAULTS)}'\n")
        initrd = guest / "initrd.gz"
        subprocess.run([str(REPO / "e2e/kernel/initramfs.sh"), str(kernel_dir), str(initrd),
                        str(guest / "workload.sh"), str(guest / "config.sh")], check=True,
                       timeout=120)
        qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-m", "512", "-smp", "2",
             "-kernel", str(kernel_dir / "vmlinuz"), "-initrd", str(initrd),
             "-append", "console=ttyS0 quiet panic=-1", "-nographic", "-no-reboot",
             "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace")
        self.helpers.append(qemu)
        lines = queue.Queue()

        def read_console():
            with open(WORK / "guest.log", "w") as log:
                for line in qemu.stdout:
                    log.write(line)
                    log.flush()
                    lines.put((time.monotonic(), line.strip()))
            lines.put(None)

        threading.Thread(target=read_console, daemon=True).start()
        steps, sources, timings = {}, {}, {}
        deadline = time.monotonic() + (600 if self.long else 150)
        while time.monotonic() < deadline:
            try:
                item = lines.get(timeout=1)
            except queue.Empty:
                continue
            if item is None:
                break
            seen, line = item
            words = line.split()
            if not words or not words[0].startswith("ZN-"):
                continue
            if words[0] == "ZN-SRC" and len(words) == 3:
                sources[words[1]] = words[2]
            elif words[0] == "ZN-FAULT" and len(words) == 2:
                try:
                    timings[words[1]] = self.apply_kernel_fault(words[1], dp, proxy)
                except Exception as e:  # that row fails; the others go on
                    timings[words[1]] = {"error": f"{type(e).__name__}: {e}"}
            elif words[0] == "ZN-IO" and len(words) == 2:
                timings.setdefault(words[1], {})["io"] = seen
            elif words[0] == "ZN-FAULT-END" and len(words) == 3:
                proxy.clear()
                timing = timings.setdefault(words[1], {})
                timing["done"] = seen
                timing.setdefault("cleared", time.monotonic())
                timing["guest_seconds"] = float(words[2])
            elif words[0] == "ZN-STEP" and len(words) >= 3:
                steps[words[1]] = " ".join(words[2:])
            elif words[0] == "ZN-DONE":
                break
        if qemu.poll() is None:
            qemu.kill()
        qemu.wait()
        proxy.clear()
        check(steps.get("mount") == "ok", f"the guest did not mount ({steps.get('mount')}); "
                                          f"see {WORK / 'guest.log'}")
        for fault in self.KERNEL_FAULTS:
            self.scenario(f"kernel client: {fault}", "nfs",
                          lambda row: self.kernel_row(row, dp, fault, steps, sources, timings))

    def apply_kernel_fault(self, fault, dp, proxy):
        """Applies `fault`; returns when it was applied and, for one with a fixed length
        (which ends before this returns), when it ended. The others end at the guest's
        ZN-FAULT-END."""
        applied = time.monotonic()
        if fault == "latency":
            proxy.toxic("knfs", "latency", "downstream", latency=20, jitter=10)
            proxy.toxic("knfs", "latency", "upstream", latency=20, jitter=10)
        elif fault == "bandwidth":
            proxy.toxic("knfs", "bandwidth", "downstream", rate=4096)
            proxy.toxic("knfs", "bandwidth", "upstream", rate=4096)
        elif fault == "slicer":
            for stream in ("downstream", "upstream"):
                proxy.toxic("knfs", "slicer", stream, average_size=64, size_variation=48,
                            delay=0)
        elif fault == "reset_peer":
            # The guest starts writing a second after announcing, so for two seconds every
            # connection it makes is reset.
            self.kernel_resets = self.connections_closed(dp)
            proxy.toxic("knfs", "reset_peer", "downstream", timeout=0)
            time.sleep(3)
            proxy.clear()
            self.kernel_resets = self.connections_closed(dp) - self.kernel_resets
            return {"applied": applied, "cleared": time.monotonic()}
        elif fault == "sigstop":
            dp.signal(signal.SIGSTOP)
            time.sleep(3)
            dp.signal(signal.SIGCONT)
            return {"applied": applied, "cleared": time.monotonic()}
        elif fault == "sigkill":
            # Once the server has answered 4 WRITEs of the 32 MiB file and no COMMIT (the
            # client holds UNSTABLE replies it must not trust until a COMMIT with the same
            # verifier): kill, and start again on the same port.
            def answered():
                m = dp.metrics()
                writes = metric(m, "zeronas_nfs_requests_total", proc="WRITE", status="ok")
                return m if writes - self.writes_before_kill >= 4 else None

            self.writes_before_kill = metric(dp.metrics(), "zeronas_nfs_requests_total",
                                             proc="WRITE", status="ok")
            commits_before = metric(dp.metrics(), "zeronas_nfs_requests_total", proc="COMMIT")
            scrape = wait_for("4 WRITEs of the guest's copy answered", 60, answered, 0.01)
            dp.kill()
            self.kernel_killed_at = (dp.root / "k-sigkill").stat().st_size
            self.commits_before_kill = metric(scrape, "zeronas_nfs_requests_total",
                                              proc="COMMIT") - commits_before
            dp.start()
            return {"applied": applied, "cleared": time.monotonic()}
        return {"applied": applied}

    @staticmethod
    def connections_closed(dp):
        """Connections the dataplane has logged as closed."""
        with open(dp.log) as log:
            return sum('"closing NFS connection"' in line for line in log)

    def kernel_row(self, row, dp, fault, steps, sources, timings):
        timing = timings.get(fault, {})
        check("error" not in timing, f"applying the fault: {timing.get('error')}")
        check("applied" in timing, "the fault was never applied (no ZN-FAULT line seen)")
        check("io" in timing and "done" in timing, "the guest's I/O was not seen")
        # The fault was on before the I/O began, and (when it has a fixed length) ended
        # while the I/O was still running: the I/O met it.
        check(timing["applied"] < timing["io"], "the I/O began before the fault")
        check(timing["cleared"] < timing["done"] or fault in ("latency", "bandwidth", "slicer"),
              "the I/O ended before the fault did")
        if fault in ("reset_peer", "sigstop", "sigkill"):
            check(timing["io"] < timing["cleared"], "the fault ended before the I/O began")
        step = steps.get(fault)
        check(step is not None, f"the guest never finished this step; see {WORK / 'guest.log'}")
        check(step == "ok", f"the guest saw: {step}")
        want = sources["src32" if fault == "sigkill" else "src"]
        data = (dp.root / f"k-{fault}").read_bytes()
        check(hashlib.md5(data).hexdigest() == want, "the file on the server's disk differs")
        if fault == "sigkill":
            killed_at = self.kernel_killed_at
            check(dp.starts == 2, f"the dataplane started {dp.starts} times, want 2")
            check(killed_at < len(data), "the whole file had arrived before the kill")
            check(self.commits_before_kill == 0,
                  "the guest committed before the kill: nothing was left to resend")
            # The last fault: everything the restarted process received is this file. The
            # whole of it, so the bytes written (UNSTABLE) before the kill were sent again:
            # the write verifier changed, so the client's COMMIT could not cover them.
            status, body = http_get(f"http://127.0.0.1:{dp.http_port}/v1/shares/chaos/stats")
            check(status == 200, f"stats: {status}")
            received = json.loads(body)["bytes_received"]
            check(received >= len(data),
                  f"the restarted server received {received} bytes of {len(data)}: "
                  "the writes before the kill were not resent")
            row["detail"] = (f"killed after 4 answered UNSTABLE WRITEs and no COMMIT, "
                             f"{killed_at / MiB:.1f} of {len(data) / MiB:.0f} MiB on disk; the "
                             f"new process received {received / MiB:.1f} MiB (all resent)")
        if fault in ("reset_peer", "sigstop", "sigkill"):
            row["recovery_s"] = round(max(0.0, timing["done"] - timing["cleared"]), 3)
        took = timing.get("guest_seconds", 0.0)
        if fault == "sigstop":
            row["detail"] = (f"the write began {timing['cleared'] - timing['io']:.1f} s before "
                             f"SIGCONT; write and read took {took:.1f} s")
        if fault == "reset_peer":
            check(self.kernel_resets >= 1, "no connection of the guest was reset")
            row["detail"] = (f"{self.kernel_resets} connections reset in 3 s; the hard mount "
                             "reconnected and resent")
        row["verified"] = len(data)
        self.settle(dp)


    # the run -----------------------------------------------------------------------

    def run(self):
        started = time.monotonic()
        for phase in (self.network, self.processes, self.disks, self.kernel):
            print(f"== {phase.__name__}", flush=True)
            try:
                phase()
            except Exception as e:  # a phase that cannot even start is one failed row
                self.rows.append({"fault": f"{phase.__name__} set-up", "protocol": "-",
                                  "verified": 0, "client_errors": [], "recovery_s": None,
                                  "ok": False, "detail": f"{type(e).__name__}: {e}",
                                  "seconds": 0})
                print(f"  FAIL {phase.__name__} set-up: {e}", flush=True)
        return time.monotonic() - started

    def cleanup(self):
        for dp in self.dataplanes:
            dp.stop()
        for helper in self.helpers:
            if isinstance(helper, Toxiproxy):
                helper.stop()
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", path], check=False)
        for helper in self.helpers:
            if isinstance(helper, subprocess.Popen):
                helper.terminate()
                try:
                    helper.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    helper.kill()
                    helper.wait()


def table(rows):
    header = f"{'fault':<34} {'proto':<5} {'outcome':<7} {'verified':>10} {'recovery':>9}  client saw"
    lines = [header, "-" * len(header)]
    for r in rows:
        verified = f"{r['verified'] / MiB:.1f} MiB" if r["verified"] else "-"
        recovery = f"{r['recovery_s']:.2f} s" if r["recovery_s"] is not None else "-"
        seen = "; ".join(dict.fromkeys(e for e in r["client_errors"] if e))[:70] or "no error"
        outcome = "ok" if r["ok"] else "FAIL"
        lines.append(f"{r['fault']:<34} {r['protocol']:<5} {outcome:<7} {verified:>10} "
                     f"{recovery:>9}  {seen}")
    notes = [f"  {r['fault']} ({r['protocol']}): {r['detail']}" for r in rows if r["detail"]]
    if notes:
        lines += ["", "notes (and why a row failed):", *notes]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--toxiproxy", required=True)
    parser.add_argument("--faultfs", required=True)
    parser.add_argument("--dataplane", required=True)
    parser.add_argument("--operator", required=True)
    parser.add_argument("--long", action="store_true", help="bigger files and transfers")
    parser.add_argument("--budget", type=float, default=180,
                        help="fail when the run takes longer (seconds)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("chaos.py needs root (mounts, setpriv); make chaos runs it so")
    # PID 1 of its namespace ignores signals it has no handler for: the hard stop's SIGTERM
    # ends the run here, through the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "tokens").mkdir(parents=True)
    (WORK / "tokens" / "token").write_text(TOKEN)
    (WORK / "tokens" / "read-token").write_text(READ_TOKEN)
    chaos = Chaos(options)
    try:
        took = chaos.run() - chaos.outside_budget
    finally:
        chaos.cleanup()
    print()
    print(table(chaos.rows))
    with open(WORK / "results.json", "w") as f:
        json.dump(chaos.rows, f, indent=1)
    failed = [r for r in chaos.rows if not r["ok"]]
    fetched = (f", plus {chaos.outside_budget:.0f} s fetching the guest's kernel"
               if chaos.outside_budget >= 1 else "")
    print(f"\nchaos: {len(chaos.rows) - len(failed)} passed, {len(failed)} failed, "
          f"{took:.0f} s (budget {options.budget:.0f} s){fetched}"
          f"{' (long run)' if options.long else ''}")
    if took > options.budget:
        print(f"chaos: over its budget of {options.budget:.0f} s", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
