#!/usr/bin/env python3
"""HTTP benchmark: zeronas-dataplane against nginx (sendfile on and off), side by side.

Every server serves the same folder and is driven by the same wrk command; runs are
interleaved (zeronas, nginx-on, nginx-off, zeronas, ...) so drift hits all alike. For each
file size it reports medians of requests/s, MB/s, p50/p99 latency and server CPU seconds
per GB moved (from /proc/PID/stat before and after, workers included), and the ratio
zeronas / best nginx. Results also go to target/bench/http.json.

Usage: make bench      (or: python3 dataplane/bench/http_bench.py [--runs N] [--duration S])
This is a benchmark, not a test: it asserts nothing.
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
    os.makedirs(DATA, exist_ok=True)
    for name, size, _ in SIZES:
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
        with open(conf, "w") as f:
            f.write(f"""
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile {'on' if sendfile else 'off'};
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    server {{
        listen 127.0.0.1:{port};
        location /v1/shares/default/files/ {{ alias {DATA}/; }}
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


def run_wrk(url, connections, duration, threads):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    lat = {}
    for pct, value in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M):
        lat[pct] = unit(value, {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4})
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    read_bytes = unit(total.group(4) + total.group(5), {"B": 1, "KB": 1024, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40})
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "bytes": read_bytes, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "non_2xx": int(errors.group(1)) if errors else 0, "command": " ".join(cmd)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--sizes", default=",".join(s[0] for s in SIZES))
    ap.add_argument("--extra", action="store_true",
                    help="also run zeronas through hyper only: pread chunks vs mmap (read-only share)")
    args = ap.parse_args()
    ensure_tools()
    os.makedirs(OUT, exist_ok=True)
    log("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "zeronas-dataplane"], cwd=REPO, check=True)
    make_data()
    threads = min(2, args.workers)
    servers = [Zeronas(args.workers), Nginx(args.workers, True, 18481), Nginx(args.workers, False, 18482)]
    if args.extra:
        servers += [Zeronas(args.workers, "zeronas-hyper-pread", ["--zero-copy", "copy"]),
                    Zeronas(args.workers, "zeronas-hyper-mmap", ["--zero-copy", "copy", "--read-only", "--mmap-min", "0"])]
    wanted = [s for s in SIZES if s[0] in args.sizes.split(",")]
    results = {s.name: {name: [] for name, _, _ in wanted} for s in servers}
    try:
        for name, size, conns in wanted:
            for server in servers:  # warm the page cache and each server
                run_wrk(server.base + name, conns, 1, threads)
            for run in range(args.runs):
                for server in servers:
                    before = cpu_seconds(server.pids())
                    r = run_wrk(server.base + name, conns, args.duration, threads)
                    cpu = cpu_seconds(server.pids()) - before
                    r["cpu_s"] = cpu
                    r["cpu_s_per_gb"] = cpu / (r["bytes"] / 1e9) if r["bytes"] else None
                    r["mb_s"] = r["bytes"] / args.duration / 1e6
                    results[server.name][name].append(r)
                    log(f"{name:>7} run {run + 1} {server.name:<22} {r['rps']:>10.0f} req/s {r['mb_s']:>8.0f} MB/s "
                        f"p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms cpu/GB {r['cpu_s_per_gb']:.3f} s")
    finally:
        for server in servers:
            server.stop()

    def med(server, size, key):
        values = [r[key] for r in results[server][size] if r[key] is not None]
        return statistics.median(values) if values else None

    summary = {}
    lines = []
    header = f"| size | metric | zeronas | nginx sendfile on | nginx sendfile off | zeronas / best nginx |"
    lines += [header, "|---|---|---|---|---|---|"]
    for name, _, _ in wanted:
        summary[name] = {}
        for key, label, higher_better in (("rps", "requests/s", True), ("mb_s", "MB/s", True),
                                          ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False),
                                          ("cpu_s_per_gb", "CPU s/GB", False)):
            z = med("zeronas", name, key)
            on = med("nginx-sendfile-on", name, key)
            off = med("nginx-sendfile-off", name, key)
            best = max(on, off) if higher_better else min(on, off)
            ratio = z / best if best else None
            summary[name][key] = {"zeronas": z, "nginx_sendfile_on": on, "nginx_sendfile_off": off,
                                  "ratio_vs_best_nginx": ratio}
            for extra in servers[3:]:
                summary[name][key][extra.name] = med(extra.name, name, key)
            fmt = (lambda v: f"{v:,.0f}") if key in ("rps", "mb_s") else (lambda v: f"{v:.3f}")
            lines.append(f"| {name} | {label} | {fmt(z)} | {fmt(on)} | {fmt(off)} | {ratio:.2f}× |")
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "workers": args.workers,
              "runs": args.runs, "duration_s": args.duration, "wrk_threads": threads,
              "command": "make bench", "summary": summary, "raw": results}
    with open(os.path.join(OUT, "http.json"), "w") as f:
        json.dump(report, f, indent=2)
    print("\n".join(lines))
    print(f"\nmedians of {args.runs} runs of {args.duration} s; wrk -t{threads}; {args.workers} server workers; "
          f"raw results in target/bench/http.json")


if __name__ == "__main__":
    main()
