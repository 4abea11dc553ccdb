#!/usr/bin/env python3
"""Renders the zeronas dashboard from a real run: `make dashboard-picture`.

A release dataplane serves a folder over HTTP and NFS on loopback ports; a real Prometheus
(built from its Go module) scrapes it every second and evaluates the chart's rules (their
group interval shortened to 5 s for a run of minutes); a load generator goes through four
phases:

  1. steady     GETs of 4 KiB and 1 MiB files (about 300 a second), uploads, a few 404s,
                NFS reads
  2. slow       the same, plus six clients that read 8 MiB bodies slowly (latency to the
                last byte climbs at P99, not at P50; time to first byte does not), and the
                served files' pages evicted twice a second (posix_fadvise DONTNEED), so
                sends find them out of the page cache
  3. fallbacks  uploads with `Expect: 100-continue` (curl's default above 1 MiB), which the
                zero-copy front end hands to hyper: the fallback ratio climbs
  4. steady     again

Then every panel's queries are asked of Prometheus (query_range, Grafana's variables set
to all volumes) and plotted with matplotlib into docs/dashboard.png, panel by panel as the
dashboard lays them out (the Operator row needs a cluster and is left out). Environment:
PROMETHEUS (the binary), PHASE_SECONDS (default 60).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "zeronas"
OUT = REPO / "docs" / "dashboard.png"
PHASE_SECONDS = int(os.environ.get("PHASE_SECONDS", "60"))
PHASES = ["steady", "slow", "fallbacks", "steady"]
FILES = "/v1/shares/default/files"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"dashboard_picture: {url} did not answer in {timeout} s")


class Load:
    """Load generator threads; `phase` says what they do now."""

    def __init__(self, http, nfs_port):
        self.http, self.nfs_port = http, nfs_port
        self.phase = "steady"
        self.stop = threading.Event()
        self.errors = {}

    def error(self, kind, detail):
        if kind not in self.errors:
            print(f"dashboard_picture: first {kind} error: {detail}", flush=True)
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.http}{FILES}/{path}", timeout=30) as r:
                r.read()
        except urllib.error.HTTPError as e:
            if e.code != 404:
                self.error("GET", e)
        except OSError as e:
            self.error("GET", e)

    def slow_get(self, path):
        # Reads in 64 KiB pieces, 20 ms apart, through a small receive window: the server
        # waits for room to send the last bytes.
        try:
            host, port = self.http.rsplit(":", 1)
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                s.connect((host, int(port)))
                s.sendall(f"GET {FILES}/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                while s.recv(64 * 1024):
                    time.sleep(0.02)
        except OSError as e:
            self.error("slow GET", e)

    def readers(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            self.get("small.bin" if n % 4 else "large.bin")
            if n % 50 == 0:
                self.get("missing.bin")
            time.sleep(0.01)

    def slow_readers(self):
        while not self.stop.is_set():
            if self.phase == "slow":
                self.slow_get("medium.bin")
            else:
                time.sleep(0.2)

    def evictions(self, files):
        while not self.stop.is_set():
            if self.phase == "slow":
                for f in files:
                    fd = os.open(f, os.O_RDONLY)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
            time.sleep(0.5)

    def uploads(self, body):
        n = 0
        while not self.stop.is_set():
            n += 1
            expect = [] if self.phase == "fallbacks" else ["-H", "Expect:"]
            r = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(body), *expect,
                 f"http://{self.http}{FILES}/up/{n % 8}.bin"],
                capture_output=True, text=True,
            )
            if r.stdout not in ("200", "201", "204"):
                self.error("PUT", r.stdout + r.stderr)
            time.sleep(0.02 if self.phase == "fallbacks" else 0.5)

    def nfs(self):
        # auto-traverse-mounts=0: libnfs 4.0 fails files at the top of an export without it.
        url = (f"nfs://127.0.0.1/large.bin?version=3&nfsport={self.nfs_port}&mountport={self.nfs_port}"
               "&auto-traverse-mounts=0")
        while not self.stop.is_set():
            r = subprocess.run(["nfs-cat", url], capture_output=True)
            if r.returncode != 0:
                self.error("NFS", r.stderr)
            time.sleep(0.2)


def query_range(prom, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"http://{prom}/api/v1/query_range?{q}", timeout=60) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"dashboard_picture: {expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()


def plot(dashboard, prom, start, end, phase_marks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The operator's panels need a cluster (the e2e has one); this run has a dataplane only.
    panels, rows, row = [], [], None
    for p in dashboard["panels"]:
        if p["type"] == "row":
            row = p["title"]
            if row != "Operator":
                rows.append(p)
        elif row != "Operator":
            panels.append(p)
    cols = 4
    nrows = (len(panels) + cols - 1) // cols
    plt.style.use("dark_background")
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.3 * nrows))
    step = 2
    for ax, panel in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        lines = []
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in {"$__rate_interval": "30s", "$namespace": ".*", "$nasvolume": ".*"}.items():
                expr = expr.replace(var, value)
            for series in query_range(prom, expr, start, end, step):
                xs = [(float(t) - start) / 60 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                if unit == "s":
                    ys = [y * 1000 for y in ys]
                dashed = re.match(r"(P99 baseline|alert threshold)", target["legendFormat"])
                lines.append((xs, ys, "--" if dashed else "-",
                              legend(target["legendFormat"], series["metric"])[:48]))
        # Series that stayed at zero (the reasons and protocols that start at zero) only
        # crowd the legend: drawn only when nothing else moved.
        moving = [line for line in lines if any(line[1])]
        for xs, ys, style, label in moving or lines:
            ax.plot(xs, ys, linewidth=1.2, linestyle=style, label=label)
        if not lines:
            ax.text(0.5, 0.5, "no series: nothing of this kind happened",
                    ha="center", va="center", transform=ax.transAxes, fontsize=8, color="#999999")
        elif not moving:
            ax.text(0.5, 0.7, "all zero in this run", ha="center", transform=ax.transAxes,
                    fontsize=8, color="#999999")
        for t in phase_marks[1:]:
            ax.axvline((t - start) / 60, color="#777777", linewidth=0.6, linestyle=":")
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.set_xlabel("minutes", fontsize=7)
        ax.set_ylabel({"s": "ms", "Bps": "bytes/s", "reqps": "req/s", "percentunit": "ratio",
                       "bytes": "bytes", "ops": "per second"}.get(unit, ""), fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.2)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles[:10], labels[:10], fontsize=6, loc="upper left", framealpha=0.4)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    names = " | ".join(r["title"] for r in rows)
    fig.suptitle(
        f"zeronas dashboard ({names}), from a real run: phases {' → '.join(PHASES)}, "
        f"{PHASE_SECONDS} s each (dotted lines); the Operator row needs a cluster and is left out",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=80)


def main():
    prometheus = os.environ.get("PROMETHEUS") or sys.exit("PROMETHEUS is not set")
    binary = REPO / "target" / "release" / "zeronas-dataplane"
    work = Path(tempfile.mkdtemp(prefix="zeronas-dashboard-"))
    share = work / "share"
    (share / "up").mkdir(parents=True)
    (share / "small.bin").write_bytes(os.urandom(4096))
    (share / "large.bin").write_bytes(os.urandom(1 << 20))
    (share / "medium.bin").write_bytes(os.urandom(8 << 20))
    upload = work / "upload.bin"
    upload.write_bytes(os.urandom(2 << 20))
    http, nfs_port, metrics, prom = (f"127.0.0.1:{free_port()}", free_port(),
                                     f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [binary, "--root", share, "--http", http, "--nfs", f"127.0.0.1:{nfs_port}",
             "--metrics", metrics, "--capacity", "1Gi"],
            stdout=open(work / "dataplane.log", "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://{metrics}/readyz")

        rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
        for group in rules["groups"]:
            group["interval"] = "5s"
        (work / "rules.yaml").write_text(yaml.safe_dump(rules))
        (work / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "5s"},
            "rule_files": [str(work / "rules.yaml")],
            "scrape_configs": [{
                "job_name": "zeronas-dataplane",
                "static_configs": [{"targets": [metrics], "labels": {
                    "namespace": "demo", "nasvolume": "media", "pod": "media-dataplane-0"}}],
            }],
        }))
        procs.append(subprocess.Popen(
            [prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address={prom}"],
            stdout=open(work / "prometheus.log", "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://{prom}/-/ready", timeout=60)

        load = Load(http, nfs_port)
        threads = [threading.Thread(target=load.readers) for _ in range(3)]
        threads += [threading.Thread(target=load.slow_readers) for _ in range(6)]
        threads += [threading.Thread(target=load.uploads, args=(upload,)) for _ in range(2)]
        threads += [threading.Thread(target=load.nfs),
                    threading.Thread(target=load.evictions, args=([share / "large.bin", share / "medium.bin"],))]
        start = time.time()
        for t in threads:
            t.start()
        marks = []
        for phase in PHASES:
            marks.append(time.time())
            load.phase = phase
            print(f"dashboard_picture: phase {phase} for {PHASE_SECONDS} s", flush=True)
            time.sleep(PHASE_SECONDS)
        load.stop.set()
        for t in threads:
            t.join()
        time.sleep(6)
        end = time.time()
        print(f"dashboard_picture: load done (client errors: {load.errors or 'none'}); plotting", flush=True)
        plot(json.loads((CHART / "files" / "dashboard.json").read_text()), prom, start, end, marks)
        print(f"dashboard_picture: wrote {OUT.relative_to(REPO)}")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
