#!/usr/bin/env python3
"""HTTP benchmark: zeronas-dataplane against nginx (sendfile on and off), side by side.

Downloads: zeronas with each --io-engine (epoll, io_uring) and nginx serve the same folder and is driven by the same wrk command; runs
are interleaved (zeronas, nginx-on, nginx-off, zeronas, ...) so drift hits all alike. For each
file size it reports medians of requests/s, MB/s of bodies (requests x file size, headers not
counted), p50/p99 latency and server CPU seconds per GB of bodies (from /proc/PID/stat before
and after, workers included), and the ratio zeronas / best nginx.

Uploads: PUT of the same sizes to zeronas (socket -> pipe -> file with splice), to zeronas
through hyper (`--zero-copy copy`: the body read into buffers and written, the plain
baseline) and to nginx's DAV module (`dav_methods PUT`). zeronas fsyncs the file and its
folder before it answers; nginx does not.

Any non-2xx response or socket error in any run fails the benchmark (exit 1) after the
tables are printed: a fast error is not a fast answer. Results go to target/bench/http.json.

Usage: make bench      (or: python3 dataplane/bench/http_bench.py [--runs N] [--duration S])
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "target", "bench")
DATA = os.path.join(OUT, "http-data")
SIZES = [("1KiB", 1024, 32), ("64KiB", 64 * 1024, 32), ("1MiB", 1 << 20, 16), ("100MiB", 100 << 20, 4)]
# Uploads: (name, bytes, connections). Each PUT replaces the same file.
UPLOADS = [("64KiB", 64 * 1024, 16), ("1MiB", 1 << 20, 8), ("100MiB", 100 << 20, 2)]
PUT_SCRIPT = os.path.join(OUT, "put.lua")
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_tools():
    missing = [pkg for tool, pkg in (("wrk", "wrk"), ("nginx", "nginx-light")) if not shutil.which(tool)]
    if missing:
        log(f"installing {' '.join(missing)}")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + missing, check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def make_data():
    os.makedirs(os.path.join(DATA, "up"), exist_ok=True)
    with open(PUT_SCRIPT, "w") as f:
        f.write('wrk.method = "PUT"\n'
                'local f = assert(io.open(os.getenv("ZN_BODY"), "rb"))\n'
                'wrk.body = f:read("*a")\n'
                'f:close()\n')
    for name, size, _ in SIZES + UPLOADS:
        path = os.path.join(DATA, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path, "wb") as f:
                remaining = size
                while remaining:
                    chunk = os.urandom(min(remaining, 1 << 20))
                    f.write(chunk)
                    remaining -= len(chunk)


def children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
            except OSError:
                pass
    return kids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


class Zeronas:
    name = "zeronas"

    def __init__(self, workers, name="zeronas", extra=()):
        self.name = name
        binary = os.path.join(REPO, "target", "release", "zeronas-dataplane")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [binary, "--root", DATA, "--http", "127.0.0.1:0", "--nfs", "off", "--workers", str(workers),
             "--rescan-interval", "0s", *extra],
            stdout=subprocess.PIPE, stderr=open(os.path.join(OUT, f"{self.name}.log"), "w"), env=env)
        line = json.loads(self.proc.stdout.readline())
        self.base = f"http://{line['http']}/v1/shares/default/files/"

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Nginx:
    def __init__(self, workers, sendfile, port):
        self.name = f"nginx-sendfile-{'on' if sendfile else 'off'}"
        prefix = os.path.join(OUT, self.name)
        os.makedirs(prefix, exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        # As root, nginx would run its workers as nobody, who may not write the folder.
        user = "user root root;" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(f"""
{user}
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile {'on' if sendfile else 'off'};
    client_max_body_size 0;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    server {{
        listen 127.0.0.1:{port};
        location /v1/shares/default/files/ {{ alias {DATA}/; dav_methods PUT; }}
    }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-p", prefix], stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}/v1/shares/default/files/"
        deadline = time.time() + 10
        while time.time() < deadline and len(children(self.proc.pid)) < workers:
            time.sleep(0.05)
        time.sleep(0.2)

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def unit(value, units):
    m = re.match(r"([\d.]+)(\w*)", value)
    return float(m.group(1)) * units.get(m.group(2), 1.0)


def run_wrk(url, connections, duration, threads, size, upload=None):
    """One wrk run; `size` is the body of each request (GET: the file, PUT: the upload)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "--latency"]
    env = dict(os.environ)
    if upload:
        cmd += ["-s", PUT_SCRIPT]
        env["ZN_BODY"] = upload
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    lat = {}
    for pct, value in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M):
        lat[pct] = unit(value, {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4})
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    requests = int(total.group(1))
    seconds = unit(total.group(2) + total.group(3), {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0})
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": requests / seconds, "requests": requests, "seconds": seconds,
            "body_bytes": requests * size, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0,
            "command": " ".join(cmd)}


def preflight(url, upload=None):
    """The status one request gets: wrk counts only statuses >= 400, so 1xx/3xx are caught here."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", url]
    if upload:
        cmd[1:1] = ["-X", "PUT", "--data-binary", "@" + upload]
    return int(subprocess.run(cmd, capture_output=True, text=True).stdout or 0)


def measure(servers, cases, runs, duration, threads, kind):
    """Interleaved runs of every case on every server; returns {server: {case: [run]}}."""
    results = {s.name: {name: [] for name, _, _ in cases} for s in servers}
    for name, size, conns in cases:
        upload = os.path.join(DATA, name) if kind == "upload" else None
        url = (lambda server: server.base + ("up/" + name if upload else name))
        for server in servers:  # check the answer, then warm the page cache and each server
            status = preflight(url(server), upload)
            if not 200 <= status < 300:
                results[server.name][name].append({"preflight_status": status})
                log(f"{kind} {name}: {server.name} answered {status}")
            run_wrk(url(server), conns, 1, threads, size, upload)
        for run in range(runs):
            for server in servers:
                before = cpu_seconds(server.pids())
                r = run_wrk(url(server), conns, duration, threads, size, upload)
                cpu = cpu_seconds(server.pids()) - before
                r["cpu_s"] = cpu
                r["cpu_s_per_gb"] = cpu / (r["body_bytes"] / 1e9) if r["body_bytes"] else None
                r["mb_s"] = r["body_bytes"] / r["seconds"] / 1e6
                results[server.name][name].append(r)
                log(f"{kind} {name:>7} run {run + 1} {server.name:<22} {r['rps']:>10.0f} req/s {r['mb_s']:>8.0f} MB/s "
                    f"p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms cpu/GB {r['cpu_s_per_gb'] or 0:.3f} s"
                    + (f" ERRORS non-2xx {r['non_2xx']} socket {r['socket_errors']}"
                       if r["non_2xx"] or r["socket_errors"] else ""))
    return results


METRICS = (("rps", "requests/s", True), ("mb_s", "MB/s", True), ("p50_ms", "p50 ms", False),
           ("p99_ms", "p99 ms", False), ("cpu_s_per_gb", "CPU s/GB", False))


def table(results, cases, columns, ratios):
    """Markdown table: one row per case and metric; `ratios`: (label, numerator, denominators)."""
    def med(server, case, key):
        values = [r[key] for r in results[server][case] if r.get(key) is not None]
        return statistics.median(values) if values else None

    lines = ["| size | metric | " + " | ".join(columns) + " | " + " | ".join(r[0] for r in ratios) + " |",
             "|---" * (2 + len(columns) + len(ratios)) + "|"]
    summary = {}
    for case, _, _ in cases:
        summary[case] = {}
        for key, label, higher_better in METRICS:
            values = {c: med(c, case, key) for c in columns}
            row = dict(values)
            cells = []
            for ratio_label, num, dens in ratios:
                present = [values[d] for d in dens if values[d] is not None]
                best = (max(present) if higher_better else min(present)) if present else None
                ratio = values[num] / best if best and values[num] is not None else None
                row[ratio_label] = ratio
                cells.append(f"{ratio:.2f}×" if ratio is not None else "–")
            summary[case][key] = row
            fmt = (lambda v: f"{v:,.0f}") if key in ("rps", "mb_s") else (lambda v: f"{v:.3f}")
            lines.append(f"| {case} | {label} | " + " | ".join(fmt(values[c]) if values[c] is not None else "–"
                                                            for c in columns)
                         + " | " + " | ".join(cells) + " |")
    return lines, summary


def errors_in(results):
    bad = []
    for server, cases in results.items():
        for case, runs in cases.items():
            for r in runs:
                if r.get("preflight_status") or r.get("non_2xx") or r.get("socket_errors"):
                    bad.append(f"{server} {case}: {r}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--sizes", default=",".join(s[0] for s in SIZES))
    ap.add_argument("--uploads", default=",".join(s[0] for s in UPLOADS),
                    help="upload sizes to run (empty: none)")
    ap.add_argument("--extra", action="store_true",
                    help="also run zeronas through hyper only: pread chunks vs mmap (read-only share)")
    args = ap.parse_args()
    ensure_tools()
    os.makedirs(OUT, exist_ok=True)
    log("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "zeronas-dataplane"], cwd=REPO, check=True)
    make_data()
    threads = min(2, args.workers)
    zeronas = Zeronas(args.workers)
    uring = Zeronas(args.workers, "zeronas-io_uring", ["--io-engine", "io_uring"])
    nginx_on, nginx_off = Nginx(args.workers, True, 18481), Nginx(args.workers, False, 18482)
    servers = [zeronas, uring, nginx_on, nginx_off]
    if args.extra:
        servers += [Zeronas(args.workers, "zeronas-hyper-pread", ["--zero-copy", "copy"]),
                    Zeronas(args.workers, "zeronas-hyper-mmap", ["--zero-copy", "copy", "--read-only", "--mmap-min", "0"])]
    copy = Zeronas(args.workers, "zeronas-copy", ["--zero-copy", "copy"]) if args.uploads else None
    downloads = [s for s in SIZES if s[0] in args.sizes.split(",")]
    uploads = [s for s in UPLOADS if args.uploads and s[0] in args.uploads.split(",")]
    try:
        got = measure(servers, downloads, args.runs, args.duration, threads, "download")
        put = measure([zeronas, copy, nginx_on], uploads, args.runs, args.duration, threads, "upload") if uploads else {}
    finally:
        for server in servers + ([copy] if copy else []):
            server.stop()

    columns = ["zeronas", "zeronas-io_uring", "nginx-sendfile-on", "nginx-sendfile-off"] + [s.name for s in servers[4:]]
    nginx = ["nginx-sendfile-on", "nginx-sendfile-off"]
    lines, summary = table(got, downloads, columns,
                           [("epoll / best nginx", "zeronas", nginx),
                            ("io_uring / best nginx", "zeronas-io_uring", nginx),
                            ("io_uring / epoll", "zeronas-io_uring", ["zeronas"])])
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "workers": args.workers,
              "runs": args.runs, "duration_s": args.duration, "wrk_threads": threads,
              "command": "make bench", "downloads": summary, "raw": got}
    print("Downloads (GET; zeronas = --io-engine epoll, the default)")
    print("\n".join(lines))
    if uploads:
        up_lines, up_summary = table(put, uploads, ["zeronas", "zeronas-copy", "nginx-sendfile-on"],
                                     [("zeronas / copy", "zeronas", ["zeronas-copy"]),
                                      ("zeronas / nginx DAV", "zeronas", ["nginx-sendfile-on"])])
        report["uploads"], report["raw_uploads"] = up_summary, put
        print("\nUploads (PUT; zeronas-copy = hyper reading into buffers; nginx-sendfile-on = nginx DAV)")
        print("\n".join(up_lines))
    with open(os.path.join(OUT, "http.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nmedians of {args.runs} interleaved runs of {args.duration} s; wrk -t{threads}; "
          f"{args.workers} server workers; MB/s and CPU/GB count bodies only; raw results in target/bench/http.json")
    bad = errors_in(got) + errors_in(put)
    if bad:
        print("\nFAILED: error responses or socket errors:\n" + "\n".join(bad))
        sys.exit(1)


if __name__ == "__main__":
    main()
