#!/usr/bin/env python3
"""SFTP benchmark: zeronas-dataplane's SFTP export against OpenSSH's own sftp-server (sshd on a
loopback port), same folder, same client, same keys.

The client is OpenSSH's `sftp` in batch mode with its defaults (chacha20-poly1305, which both
servers choose first; 64 requests in flight; the read and write sizes that each server's
limits@openssh.com reply allows: 255 KiB from both). sshd runs as root with the sftp
subsystem /usr/lib/openssh/sftp-server; the dataplane runs as root in posix mode, the key
mapped to uid 0, so both write as root (and zeronas skips its per-request identity switch,
which a non-root key adds: six system calls a request). Every run goes through the workloads in turn, each
against both servers, the first of each pair alternating from run to run, so drift and
order effects hit both alike:

- up-1m / down-1m: 64 files of 1 MiB put (or got) in one batch: MB/s;
- up-1g / down-1g: one 1 GiB file: MB/s.

For each, the server's CPU seconds per GB moved: utime + stime of the dataplane process, and
for sshd utime + stime + cutime + cstime of the listening sshd, whose session children (the
privilege-separated sshd and sftp-server) are reaped by it when the client leaves. Times
include the SSH handshake, the same for both.

It prints medians of interleaved runs, the ratios (throughput zeronas / OpenSSH; CPU per GB
OpenSSH / zeronas, so above 1 favours zeronas) and the goals (both >= 1.0), and writes
target/bench/sftp.json. It needs root (sshd). This is a benchmark, not a test: it asserts
nothing.

Usage: make bench   (or: sudo python3 dataplane/bench/sftp_bench.py [--runs N] [--no-build])
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "target", "bench")
TICK = os.sysconf("SC_CLK_TCK")
SMALL_COUNT, SMALL_SIZE = 64, 1 << 20
BIG_SIZE = 1 << 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid, children):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def wait_port(port, process, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited at start-up (code {process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def no_children(pid):
    """Waits until sshd has reaped its session processes (so cutime counts them)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        kids = ""
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                kids += open(f"/proc/{pid}/task/{task}/children").read().strip()
            except OSError:
                pass
        if not kids:
            return
        time.sleep(0.02)


class Server:
    def __init__(self, name, command, port, remote, children):
        self.name, self.port, self.remote, self.children = name, port, remote, children
        self.log = open(os.path.join(OUT, f"sftp-{name}.log"), "w")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(port, self.process, name)

    def cpu(self):
        if self.children:
            no_children(self.process.pid)
        return cpu_seconds(self.process.pid, self.children)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def sftp(server, key, batch, cwd):
    command = ["sftp", "-b", "-", "-P", str(server.port), "-i", key,
               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
               "-o", "IdentityAgent=none", "-o", "LogLevel=ERROR", "root@127.0.0.1"]
    started = time.perf_counter()
    out = subprocess.run(command, input=batch, text=True, cwd=cwd, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"sftp against {server.name} failed: {out.stderr.strip()[-400:]}")
    return elapsed


def workload(name, server, key, local, share):
    """Runs one workload; returns (seconds, bytes moved)."""
    r = server.remote
    if name == "up-1m":
        batch = "".join(f"put small/{i} {r}/up-small-{i}\n" for i in range(SMALL_COUNT))
        moved = SMALL_COUNT * SMALL_SIZE
    elif name == "down-1m":
        batch = "".join(f"get {r}/small-{i} got/{i}\n" for i in range(SMALL_COUNT))
        moved = SMALL_COUNT * SMALL_SIZE
    elif name == "up-1g":
        batch = f"put big {r}/up-big\n"
        moved = BIG_SIZE
    else:
        batch = f"get {r}/big got/big\n"
        moved = BIG_SIZE
    seconds = sftp(server, key, batch, local)
    # Verify sizes (a silent short transfer would flatter a server).
    if name == "up-1g":
        assert os.path.getsize(os.path.join(share, "up-big")) == BIG_SIZE
        os.remove(os.path.join(share, "up-big"))
    elif name == "down-1g":
        assert os.path.getsize(os.path.join(local, "got", "big")) == BIG_SIZE
        os.remove(os.path.join(local, "got", "big"))
    elif name == "up-1m":
        for i in range(SMALL_COUNT):
            assert os.path.getsize(os.path.join(share, f"up-small-{i}")) == SMALL_SIZE
            os.remove(os.path.join(share, f"up-small-{i}"))
    else:
        for i in range(SMALL_COUNT):
            assert os.path.getsize(os.path.join(local, "got", str(i))) == SMALL_SIZE
        shutil.rmtree(os.path.join(local, "got"))
        os.mkdir(os.path.join(local, "got"))
    return seconds, moved


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("sftp_bench.py needs root (it runs sshd); make bench runs it so")
    os.makedirs(OUT, exist_ok=True)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "zeronas-dataplane"],
                       cwd=REPO, check=True)
    binary = os.path.join(REPO, "target", "release", "zeronas-dataplane")
    work = tempfile.mkdtemp(prefix="zeronas-sftp-bench-")
    servers = []
    try:
        share, local, keys = (os.path.join(work, d) for d in ("share", "local", "keys"))
        for d in (share, local, keys, os.path.join(local, "small"), os.path.join(local, "got")):
            os.makedirs(d)
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(keys, name)], check=True)
        client_pub = open(os.path.join(keys, "client.pub")).read()
        with open(os.path.join(keys, "authorized_keys"), "w") as f:
            f.write(client_pub)
        with open(os.path.join(keys, "zeronas_keys"), "w") as f:
            f.write("uid=0,gid=0 " + client_pub)
        # Test data: the same bytes for both servers.
        for i in range(SMALL_COUNT):
            with open(os.path.join(local, "small", str(i)), "wb") as f:
                f.write(os.urandom(SMALL_SIZE))
            shutil.copy(os.path.join(local, "small", str(i)), os.path.join(share, f"small-{i}"))
        subprocess.run(["dd", "if=/dev/urandom", f"of={os.path.join(local, 'big')}", "bs=1M",
                        f"count={BIG_SIZE >> 20}", "status=none"], check=True)
        shutil.copy(os.path.join(local, "big"), os.path.join(share, "big"))

        zport, oport = free_port(), free_port()
        zeronas = Server("zeronas", [
            binary, "--root", share, "--http", "off", "--nfs", "off", "--identity", "posix",
            "--sftp", f"127.0.0.1:{zport}", "--sftp-host-key", os.path.join(keys, "host"),
            "--sftp-authorized-keys", os.path.join(keys, "zeronas_keys")], zport, "", False)
        servers.append(zeronas)
        config = os.path.join(keys, "sshd_config")
        with open(config, "w") as f:
            f.write(f"""Port {oport}
ListenAddress 127.0.0.1
HostKey {os.path.join(keys, 'host')}
AuthorizedKeysFile {os.path.join(keys, 'authorized_keys')}
PidFile {os.path.join(keys, 'sshd.pid')}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
        os.makedirs("/run/sshd", exist_ok=True)
        openssh = Server("openssh", ["/usr/sbin/sshd", "-D", "-e", "-f", config], oport, share, True)
        servers.append(openssh)

        names = ["up-1m", "down-1m", "up-1g", "down-1g"]
        results = {n: {s.name: {"mbps": [], "cpu_per_gb": []} for s in servers} for n in names}
        for run in range(args.runs):
            # Each pair alternates who goes first, so order effects (writeback after a put)
            # do not always fall on the same server.
            order = servers if run % 2 == 0 else servers[::-1]
            for name in names:
                for server in order:
                    before = server.cpu()
                    seconds, moved = workload(name, server, os.path.join(keys, "client"), local, share)
                    cpu = server.cpu() - before
                    r = results[name][server.name]
                    r["mbps"].append(moved / seconds / 1e6)
                    r["cpu_per_gb"].append(cpu / (moved / 1e9))
                    print(f"run {run + 1}/{args.runs} {name:8} {server.name:8} {moved / seconds / 1e6:8.1f} MB/s "
                          f"{cpu / (moved / 1e9):6.2f} CPU s/GB", flush=True)
        table = []
        for name in names:
            z, o = results[name]["zeronas"], results[name]["openssh"]
            zm, om = statistics.median(z["mbps"]), statistics.median(o["mbps"])
            zc, oc = statistics.median(z["cpu_per_gb"]), statistics.median(o["cpu_per_gb"])
            table.append({"workload": name, "zeronas_mbps": zm, "openssh_mbps": om,
                          "throughput_ratio": zm / om, "zeronas_cpu_s_per_gb": zc,
                          "openssh_cpu_s_per_gb": oc, "cpu_ratio": oc / zc if zc else None,
                          "runs": results[name]})
        print(f"\nSFTP, medians of {args.runs} interleaved runs (OpenSSH sftp client, same folder)")
        print(f"{'workload':10}{'zeronas MB/s':>14}{'OpenSSH MB/s':>14}{'ratio':>8}"
              f"{'zeronas CPU s/GB':>18}{'OpenSSH CPU s/GB':>18}{'ratio':>8}  goal")
        for row in table:
            cpu_ratio = f"{row['cpu_ratio']:.2f}" if row["cpu_ratio"] else "-"
            print(f"{row['workload']:10}{row['zeronas_mbps']:14.1f}{row['openssh_mbps']:14.1f}"
                  f"{row['throughput_ratio']:8.2f}{row['zeronas_cpu_s_per_gb']:18.2f}"
                  f"{row['openssh_cpu_s_per_gb']:18.2f}{cpu_ratio:>8}  both >= 1.00")
        with open(os.path.join(OUT, "sftp.json"), "w") as f:
            json.dump({"runs": args.runs, "table": table}, f, indent=2)
        print(f"\nwritten: {os.path.join(OUT, 'sftp.json')}")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
