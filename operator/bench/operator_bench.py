#!/usr/bin/env python3
"""Operator scale benchmark: zeronas-operator (release build) against a real control plane.

What it measures, on its own etcd + kube-apiserver + kube-controller-manager
(e2e/scripts/controlplane.sh, on ports apart from the e2e's, Service range 10.0.0.0/16,
kube-controller-manager without the claim binder and the Deployment and ReplicaSet
controllers: claims stay Pending and Deployments unrolled, so every volume stays as it is
once reconciled; BENCH_KCM_CONTROLLERS='*' runs them all), as the chart's ServiceAccount
with the chart's RBAC:

  A. create   the operator runs; the bench creates N NasVolumes (8 POSTs at a time) and
              times how long until every one is fully reconciled: its status has a phase and
              its PV `zeronas-<uid>`, Service, Deployment, both claims, NetworkPolicy and
              token Secret exist. Then N more (2N in all), timed too (preparation only).
  B. restart  once the operator is idle it gets SIGTERM and starts again; the bench times
              how long until steady state: all 2N reconciled, the operator's
              `zeronas_reconcile_duration_seconds_count` >= 2N, and no API write by the
              operator for 5 s (BENCH_QUIET_SECONDS). It counts the API writes of that restart.
  C. steady   60 s with nothing changing: API writes per minute.

Writes are counted twice: by the operator's own `zeronas_operator_api_requests_total{verb,
code}` (create+patch+update+delete; "n/a" when the operator has no such metric), and by
the apiserver's `apiserver_request_total` (verbs POST/PUT/PATCH/APPLY/DELETE), which also
counts kube-controller-manager's writes (replica sets, pods, claim binding, events) and the
apiserver's own (leases, Service IP addresses): both are reported, with a breakdown by
request in the JSON. The bench's own requests are
counted separately; in B and C it only reads. The apiserver's 5xx and 429 answers are
counted over A and B. RSS peak is VmHWM of each operator process, read before it stops.

The bench talks to the apiserver with the standard library only (client certificates of
the control plane's admin) and polls with one paged LIST per kind per second, as Tables
(names and the Phase column only), so polling stays cheap next to the operator.

Usage: make bench-operator      (builds the release operator first)
   or: python3 operator/bench/operator_bench.py [--volumes N] [--timeout S] [--check]
Environment: BENCH_VOLUMES (first batch, default 1000; 2x that exist for the restart),
BENCH_TIMEOUT (seconds per wait, default 600), BENCH_STEADY_SECONDS (default 60),
BENCH_QUIET_SECONDS (default 5), BENCH_PAGE (LIST page size, default 500), OPERATOR_ARGS
(extra operator arguments, shell-quoted), OPERATOR_BIN (default target/release/
zeronas-operator), BENCH_ETCD_PORT (23890), BENCH_API_PORT (16543), BENCH_SERVICE_CIDR
(10.0.0.0/16; handed to controlplane.sh as ETCD_PORT, API_PORT, SERVICE_CIDR).
The operator's --max-concurrent-reconciles, --api-qps and --api-burst, when its --help
lists them, are passed at the defaults --help states (OPERATOR_ARGS overrides them), so
the JSON records what ran.
Output: a table on stdout, progress on stderr, target/bench/operator.json, operator logs
in target/bench/operator-<phase>.log, control-plane logs in target/bench/operator-cp/.
This is a benchmark: it asserts nothing unless --check is given (exit 2 on a missed goal).
"""
import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "target", "bench")
CP_DIR = os.path.join(OUT, "operator-cp")
CONTROLPLANE = os.path.join(REPO, "e2e", "scripts", "controlplane.sh")
CRD_FILE = os.path.join(REPO, "crds", "nasvolume.yaml")
CRD_NAME = "nasvolumes.zeronas.io"
NAMESPACE = "bench"
MANAGED = "app.kubernetes.io/managed-by=zeronas-operator"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"
PAGE = int(os.environ.get("BENCH_PAGE", "500"))  # LIST page size (limit)
CREATE_WORKERS = 8
KCM_CONTROLLERS = os.environ.get(
    "BENCH_KCM_CONTROLLERS", "*,-persistentvolume-binder-controller,-deployment-controller,-replicaset-controller")
# How often the census LISTs every kind (BENCH_POLL_SECONDS): each poll lists 2,000 objects
# of seven kinds from the apiserver the operator is measured against.
POLL_SECONDS = float(os.environ.get("BENCH_POLL_SECONDS", "2"))
# Steady means no operator write for this long (BENCH_QUIET_SECONDS).
QUIET_SECONDS = float(os.environ.get("BENCH_QUIET_SECONDS", "5"))
IDLE_TIMEOUT = 60
# Operator flags the bench passes (with the operator's own default) when --help lists them.
TUNING_FLAGS = ["--max-concurrent-reconciles", "--api-qps", "--api-burst"]
OPERATOR_API_METRIC = "zeronas_operator_api_requests_total"
RECONCILES_METRIC = "zeronas_reconcile_duration_seconds_count"
OPERATOR_WRITE_VERBS = {"create", "patch", "update", "delete", "apply", "post", "put", "deletecollection"}
APISERVER_WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
# Goals (from the issue) for 1,000 new and 2,000 existing volumes on 2 cores.
GOAL_CREATE_S = 60
GOAL_RESTART_S = 60
GOAL_RSS_MIB = 100

STARTED = time.monotonic()


class BenchError(Exception):
    """A failure that ends the run, with a message for a person."""


def log(msg):
    now = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {now} +{time.monotonic() - STARTED:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the apiserver, by hand


class ApiError(BenchError):
    def __init__(self, method, path, status, body):
        self.status = status
        text = body.decode("utf-8", "replace")
        try:
            text = json.loads(text).get("message", text)
        except (ValueError, AttributeError):
            pass
        super().__init__(f"{method} {path}: HTTP {status}: {text[:300]}")


class Unreachable(BenchError):
    def __init__(self, message, timed_out):
        super().__init__(message)
        self.timed_out = timed_out


class Api:
    """A small apiserver client: client certificates, one keep-alive connection per thread,
    and a count of every request it makes (by method), so the bench's own load is known."""

    def __init__(self, port, pki):
        self.host, self.port = "127.0.0.1", port
        self.ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
        self.ctx.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))
        self.local = threading.local()
        self.lock = threading.Lock()
        self.counts = {}

    def _conn(self, fresh=False):
        conn = getattr(self.local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self.local.conn = conn
        return conn

    def _count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def counted(self):
        """{"GET": n, "POST": n, ..., and "GET 504": n for each 5xx/429 answer}."""
        with self.lock:
            return dict(self.counts)

    def request(self, method, path, body=None, content_type="application/json", accept="application/json"):
        """Returns (status, body bytes); one retry on a dropped keep-alive connection."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
            if isinstance(body, str):
                body = body.encode()
        last = None
        for attempt in range(2):
            try:
                conn = self._conn(fresh=attempt > 0)
                self._count(method)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                if resp.status >= 500 or resp.status == 429:
                    self._count(f"{method} {resp.status}")
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as e:
                last = e
        raise Unreachable(f"cannot reach the apiserver at https://{self.host}:{self.port}: {last}",
                          isinstance(last, TimeoutError))

    def json(self, method, path, body=None, ok=(200, 201), **kw):
        status, data = self.request(method, path, body, **kw)
        if status not in ok:
            raise ApiError(method, path, status, data)
        return json.loads(data) if data else {}

    def table(self, path, selector=None, column=None):
        """Every object at the collection `path`, paged: {name: value of `column` or None}."""
        result, token = {}, None
        while True:
            # resourceVersion=0: from the apiserver's watch cache, so polling costs it little.
            query = {"limit": PAGE, "includeObject": "None", "resourceVersion": "0"}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            page = self.json("GET", f"{path}?{urllib.parse.urlencode(query)}", accept=TABLE)
            names = [c["name"] for c in page.get("columnDefinitions", [])]
            at_name = names.index("Name") if "Name" in names else 0
            at_col = names.index(column) if column in names else None
            for row in page.get("rows") or []:
                cells = row["cells"]
                result[cells[at_name]] = cells[at_col] if at_col is not None else None
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return result


# ---------------------------------------------------------------- metrics


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text, names):
    """Samples of the metrics in `names` from Prometheus text: [(name, labels, value)]."""
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(tuple(names)):
            continue
        m = SAMPLE.match(line)
        if not m or m.group(1) not in names:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), value))
    return out


def apiserver_requests(api):
    """apiserver_request_total summed by (verb, code, resource, subresource)."""
    status, data = api.request("GET", "/metrics", accept="text/plain")
    if status != 200:
        raise ApiError("GET", "/metrics", status, data)
    totals = {}
    for _, labels, value in parse_prometheus(data.decode(), {"apiserver_request_total"}):
        key = tuple(labels.get(k, "") for k in ("verb", "code", "resource", "subresource"))
        totals[key] = totals.get(key, 0) + value
    return totals


def delta(after, before):
    keys = set(after) | set(before)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


def operator_samples(text):
    """Every zeronas_* sample but histogram buckets, as {"name{labels}": value}, for the JSON."""
    out = {}
    for line in text.splitlines():
        if line.startswith("zeronas_") and "_bucket{" not in line:
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value) if "." in value or "e" in value else int(value)
            except ValueError:
                pass
    return out


def is_error_code(code):
    return code.startswith("5") or code == "429"


def apiserver_summary(d):
    """Figures of an apiserver_request_total delta: writes, errors, writes by resource."""
    writes = sum(v for (verb, _, _, _), v in d.items() if verb in APISERVER_WRITE_VERBS)
    errors = sum(v for (_, code, _, _), v in d.items() if is_error_code(code))
    by_resource = {}
    for (verb, code, resource, sub), v in d.items():
        if verb in APISERVER_WRITE_VERBS:
            key = f"{verb} {resource}{'/' + sub if sub else ''}"
            by_resource[key] = by_resource.get(key, 0) + int(v)
    errs = {f"{verb} {resource}{'/' + sub if sub else ''} {code}": int(v)
            for (verb, code, resource, sub), v in d.items() if is_error_code(code)}
    return {"writes": int(writes), "errors_5xx_429": int(errors),
            "operator_kind_writes": operator_kind_writes(d),
            "writes_by_request": dict(sorted(by_resource.items(), key=lambda kv: -kv[1])),
            "errors_by_request": errs}


# Writes the controller-manager never makes (it PUTs claims, volumes and status, creates pods,
# replica sets, endpoint slices and events): an estimate of the operator's share of the
# apiserver's writes, used only to tell when the operator is quiet if it has no API metric.
def operator_kind_writes(d):
    own = {"nasvolumes", "services", "networkpolicies", "secrets"}
    total = 0
    for (verb, _, resource, sub), v in d.items():
        if verb not in APISERVER_WRITE_VERBS:
            continue
        if resource in own or verb == "APPLY" or (
                resource in ("deployments", "persistentvolumeclaims", "persistentvolumes")
                and not sub and verb in ("POST", "DELETE")):
            total += v
    return int(total)


class Operator:
    """One zeronas-operator process: started, polled for metrics and memory, stopped by PID."""

    def __init__(self, binary, kubeconfig, args, phase):
        self.phase = phase
        self.port = free_port()
        self.log_path = os.path.join(OUT, f"operator-{phase}.log")
        self.argv = [binary, "--kubeconfig", kubeconfig, "--listen", f"127.0.0.1:{self.port}",
                     "--leader-election=false"] + args
        self.logfile = open(self.log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.rss_peak_kib = 0
        self.last_metrics = None
        log(f"operator ({phase}) pid {self.proc.pid}, metrics on 127.0.0.1:{self.port}, log {self.log_path}")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f"the operator ({self.phase}) exited with status {self.proc.returncode}; "
                             f"last log lines:\n{tail(self.log_path)}")

    def get(self, path, timeout=5):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.get("/readyz")[0] == 200:
                    log(f"operator ready after {time.monotonic() - self.started:.1f} s")
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise BenchError(f"the operator was not ready within {timeout} s; log: {self.log_path}")

    def metrics(self):
        """{reconciles, writes (None without the API metric), errors, by_verb_code} now."""
        self.check_alive()
        try:
            _, text = self.get("/metrics")
        except (OSError, urllib.error.URLError) as e:
            if self.last_metrics is not None or time.monotonic() - self.started > 10:
                log(f"warning: cannot read the operator's /metrics: {e}")
            return self.last_metrics
        samples = parse_prometheus(text, {RECONCILES_METRIC, OPERATOR_API_METRIC})
        reconciles = sum(v for n, _, v in samples if n == RECONCILES_METRIC)
        api = [(l, v) for n, l, v in samples if n == OPERATOR_API_METRIC]
        by = {}
        for labels, v in api:
            key = f"{labels.get('verb', '?')} {labels.get('code', '?')}"
            by[key] = by.get(key, 0) + int(v)
        m = {
            "reconciles": int(reconciles),
            "all": operator_samples(text),
            "writes": int(sum(v for l, v in api if l.get("verb", "").lower() in OPERATOR_WRITE_VERBS)) if api else None,
            "errors": int(sum(v for l, v in api if is_error_code(l.get("code", "")))) if api else None,
            "by_verb_code": by,
        }
        self.sample_rss()
        self.last_metrics = m
        return m

    def sample_rss(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.rss_peak_kib = max(self.rss_peak_kib, int(line.split()[1]))
        except OSError:
            pass
        return self.rss_peak_kib

    def stop(self):
        """SIGTERM to this PID, then a wait for the exit (SIGKILL after 40 s)."""
        if self.proc.poll() is None:
            self.sample_rss()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                log(f"operator ({self.phase}) still running 40 s after SIGTERM; killing pid {self.proc.pid}")
                self.proc.kill()
                self.proc.wait()
            log(f"operator ({self.phase}) exited with status {self.proc.returncode}")
        self.logfile.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


# ---------------------------------------------------------------- the control plane


def controlplane(cmd, ports):
    # kube-controller-manager without the claim binder and the Deployment and ReplicaSet
    # controllers (BENCH_KCM_CONTROLLERS to change): at its client rate (20 QPS) it binds
    # about 2 claims a second and rolls out a few Deployments a second, so 2,000 volumes would
    # still be changing (each binding or rollout step changes a condition the operator
    # reports) many minutes later, and the restart could not start from volumes that are
    # already correct; with no node, no pod would ever run anyway. What is left measures the
    # operator against the apiserver alone.
    env = dict(os.environ, ETCD_PORT=str(ports["etcd"]), API_PORT=str(ports["api"]), SERVICE_CIDR=ports["cidr"],
               KCM_CONTROLLERS=KCM_CONTROLLERS)
    r = subprocess.run([CONTROLPLANE, cmd, CP_DIR], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in r.stderr.splitlines():
        log(line)
    if r.returncode != 0:
        raise BenchError(f"controlplane.sh {cmd} failed (status {r.returncode}); logs in {CP_DIR}")


def install_crd(api, timeout=60):
    with open(CRD_FILE) as f:
        api.json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", f.read(),
                 content_type="application/yaml")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = api.json("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            break
        time.sleep(0.2)
    else:
        raise BenchError(f"the CRD {CRD_NAME} was not Established within {timeout} s")
    api.json("POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": NAMESPACE}}))
    # Discovery of the new group may lag the condition a little.
    while time.monotonic() < deadline:
        if api.request("GET", f"{volumes_path()}?limit=1")[0] == 200:
            return
        time.sleep(0.2)
    raise BenchError(f"{volumes_path()} did not answer within {timeout} s")


RELEASE_NAMESPACE = "zeronas-system"
RBAC_COLLECTIONS = {
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{RELEASE_NAMESPACE}/roles",
    "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{RELEASE_NAMESPACE}/rolebindings",
    "ServiceAccount": f"/api/v1/namespaces/{RELEASE_NAMESPACE}/serviceaccounts",
}


def service_account_kubeconfig(api, port):
    """The operator's identity as the chart installs it: its ServiceAccount, ClusterRole and
    bindings (rendered by helm from charts/zeronas), and a kubeconfig with a token of that
    ServiceAccount. So the bench runs under the chart's RBAC (a missing verb shows) and under
    the apiserver's priority and fairness (the admin user is exempt: it never sees 429)."""
    helm = os.environ.get("HELM") or shutil.which("helm")
    if not helm:
        raise BenchError("no helm: run `make bench-operator` (it builds helm) or set HELM")
    rendered = subprocess.run(
        [helm, "template", "zeronas", os.path.join(REPO, "charts", "zeronas"), "--namespace", RELEASE_NAMESPACE,
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        check=True, capture_output=True, text=True).stdout
    api.json("POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": RELEASE_NAMESPACE}}))
    account = None
    for doc in re.split(r"^---\s*$", rendered, flags=re.M):
        kind = re.search(r"^kind: (\w+)", doc, flags=re.M)
        if not kind:
            continue
        kind = kind.group(1)
        if kind not in RBAC_COLLECTIONS:
            raise BenchError(f"unexpected {kind} in the chart's RBAC templates")
        api.json("POST", RBAC_COLLECTIONS[kind], doc, content_type="application/yaml")
        if kind == "ServiceAccount":
            account = re.search(r"^  name: (\S+)", doc, flags=re.M).group(1)
    if not account:
        raise BenchError("the chart rendered no ServiceAccount")
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 4 * 3600}}
    token = api.json("POST", f"/api/v1/namespaces/{RELEASE_NAMESPACE}/serviceaccounts/{account}/token",
                     json.dumps(request))["status"]["token"]
    path = os.path.join(CP_DIR, "operator.kubeconfig")
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {{ server: "https://127.0.0.1:{port}", certificate-authority: "{os.path.join(CP_DIR, 'pki', 'ca.crt')}" }}
users:
- name: {account}
  user: {{ token: "{token}" }}
contexts:
- name: bench
  context: {{ cluster: bench, user: {account} }}
current-context: bench
""")
    return path, f"system:serviceaccount:{RELEASE_NAMESPACE}:{account}"


def volumes_path():
    return f"/apis/zeronas.io/v1alpha1/namespaces/{NAMESPACE}/nasvolumes"


def volume_name(i):
    return f"vol-{i:05d}"


def create_volumes(api, first, count):
    """Creates NasVolumes first..first+count-1, 8 at a time: {name: uid}."""
    def create(i):
        name = volume_name(i)
        body = json.dumps({"apiVersion": "zeronas.io/v1alpha1", "kind": "NasVolume",
                           "metadata": {"name": name}, "spec": {"capacity": "1Gi"}})
        for attempt in range(10):
            status, data = api.request("POST", volumes_path(), body)
            if status == 201:
                return name, json.loads(data)["metadata"]["uid"]
            if status == 409:  # created by an earlier attempt whose answer was lost
                return name, api.json("GET", f"{volumes_path()}/{name}")["metadata"]["uid"]
            if status != 429 and status < 500:
                raise ApiError("POST", volumes_path(), status, data)
            time.sleep(0.2 * (attempt + 1))
        raise ApiError("POST", volumes_path(), status, data)

    uids = {}
    with concurrent.futures.ThreadPoolExecutor(CREATE_WORKERS) as pool:
        for name, uid in pool.map(create, range(first, first + count)):
            uids[name] = uid
    return uids


# ---------------------------------------------------------------- what "reconciled" means


def owned_names(name, uid):
    """Every object a reconciled NasVolume has, by kind (operator/src/names.rs)."""
    return {
        "persistentvolumes": f"zeronas-{uid}",
        "services": name,
        "deployments": f"{name}-dataplane",
        "persistentvolumeclaims": [name, f"{name}-data"],
        "networkpolicies": f"{name}-dataplane",
        "secrets": f"{name}-http-tokens",
    }


COLLECTIONS = {
    "persistentvolumes": "/api/v1/persistentvolumes",
    "services": f"/api/v1/namespaces/{NAMESPACE}/services",
    "deployments": f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
    "persistentvolumeclaims": f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims",
    "networkpolicies": f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies",
    "secrets": f"/api/v1/namespaces/{NAMESPACE}/secrets",
}


def census(api, uids):
    """One LIST per kind: how many of `uids`' volumes are fully reconciled, and per part;
    None when the apiserver failed a LIST (overloaded: the next poll tries again)."""
    try:
        phases = api.table(volumes_path(), column="Phase")
        present = {kind: set(api.table(path, selector=MANAGED)) for kind, path in COLLECTIONS.items()}
    except (ApiError, Unreachable) as e:
        if isinstance(e, ApiError) and e.status < 500 and e.status != 429:
            raise
        if isinstance(e, Unreachable) and not e.timed_out:
            raise
        log(f"warning: a LIST of the census failed, trying again: {e}")
        return None
    parts = {"status.phase": 0, **{kind: 0 for kind in COLLECTIONS}}
    done = 0
    for name, uid in uids.items():
        ok = bool(phases.get(name))
        parts["status.phase"] += ok
        for kind, wanted in owned_names(name, uid).items():
            wanted = wanted if isinstance(wanted, list) else [wanted]
            have = all(w in present[kind] for w in wanted)
            parts[kind] += have
            ok = ok and have
        done += ok
    return done, parts


def wait_reconciled(api, op, uids, timeout, label):
    """Polls every second until all of `uids` are reconciled: (seconds, count reached).
    Seconds is None on timeout; the clock starts now."""
    start = time.monotonic()
    last_log = start
    done, parts = 0, {}
    while time.monotonic() - start < timeout:
        tick = time.monotonic()
        op.check_alive()
        seen = census(api, uids)
        done, parts = seen or (done, parts)
        now = time.monotonic()
        if seen and done == len(uids):
            log(f"{label}: {done}/{len(uids)} reconciled after {now - start:.1f} s")
            return now - start, done
        if now - last_log >= 10:
            last_log = now
            op.sample_rss()
            log(f"{label}: {done}/{len(uids)} reconciled; parts {fmt_parts(parts, len(uids))}; "
                f"operator RSS peak {op.rss_peak_kib / 1024:.0f} MiB")
        time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - tick)))
    log(f"{label}: timed out after {timeout} s with {done}/{len(uids)} reconciled; parts {fmt_parts(parts, len(uids))}")
    return None, done


def fmt_parts(parts, total):
    short = {"status.phase": "phase", "persistentvolumes": "pv", "services": "svc", "deployments": "deploy",
             "persistentvolumeclaims": "pvcs", "networkpolicies": "netpol", "secrets": "secret"}
    return " ".join(f"{short[k]}={v}" for k, v in parts.items() if v != total) or "all"


# ---------------------------------------------------------------- quiet and steady


class WriteWatch:
    """Tells when the operator last wrote: from its API metric, or (without one) from the
    apiserver's writes to kinds only the operator writes (see operator_kind_writes).
    `apiserver_base` is the apiserver's counters before the operator started (fresh start:
    every write since counts) or None (a running operator: the first reading is the base)."""

    def __init__(self, api, op, apiserver_base=None):
        self.api, self.op = api, op
        self.fresh = apiserver_base is not None
        self.base = apiserver_base if self.fresh else apiserver_requests(api)
        self.last_value = 0 if self.fresh else None
        self.last_change = op.started if self.fresh else time.monotonic()
        self.next_apiserver_read = 0.0

    def poll(self):
        """Reads the counters; returns the operator's metrics (None until they answer)."""
        m = self.op.metrics()
        if m is None:
            return None
        if m["writes"] is not None:
            value = m["writes"]
        elif time.monotonic() >= self.next_apiserver_read:
            # The apiserver's /metrics is ~2 MB: read it every 2 s only.
            self.next_apiserver_read = time.monotonic() + 2
            value = operator_kind_writes(delta(apiserver_requests(self.api), self.base))
        else:
            return m
        if self.last_value is None:
            self.last_value = value
        elif value != self.last_value:
            self.last_value = value
            self.last_change = time.monotonic()
        return m

    def quiet_for(self):
        return time.monotonic() - self.last_change


def wait_idle(api, op, timeout):
    """Waits until the operator made no write for QUIET_SECONDS: True, or False on timeout."""
    watch = WriteWatch(api, op)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watch.poll()
        if watch.quiet_for() >= QUIET_SECONDS:
            return True
        time.sleep(0.5)
    return False


def wait_steady(api, op, uids, timeout, apiserver_base):
    """After a start: polls until all are reconciled, reconciles >= len(uids), and no write
    for QUIET_SECONDS. Returns a dict of what was seen (steady_s None on timeout)."""
    start = op.started
    watch = WriteWatch(api, op, apiserver_base)
    reconciled_at = count_at = None
    last_log = time.monotonic()
    done, m = 0, None
    while time.monotonic() - start < timeout:
        tick = time.monotonic()
        m = watch.poll()
        seen = census(api, uids)
        done = seen[0] if seen else done
        now = time.monotonic()
        if seen and done == len(uids) and reconciled_at is None:
            reconciled_at = now - start
        if m and m["reconciles"] >= len(uids) and count_at is None:
            count_at = now - start
        if reconciled_at is not None and count_at is not None and watch.quiet_for() >= QUIET_SECONDS:
            last_write = watch.last_change - start
            steady = max(reconciled_at, count_at, last_write)
            log(f"restart: steady at {steady:.1f} s (reconciles >= {len(uids)} at {count_at:.1f} s, "
                f"last write seen at {last_write:.1f} s)")
            return {"steady_s": steady, "reconciled_s": reconciled_at, "reconciles_reached_s": count_at,
                    "last_write_s": last_write, "reconciled": done, "metrics": m}
        if now - last_log >= 10:
            last_log = now
            log(f"restart: {done}/{len(uids)} reconciled; reconciles {m['reconciles'] if m else '?'}; "
                f"operator writes {fmt(m['writes']) if m else '?'}; quiet for {watch.quiet_for():.0f} s; "
                f"RSS peak {op.rss_peak_kib / 1024:.0f} MiB")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    log(f"restart: no steady state within {timeout} s ({done}/{len(uids)} reconciled, "
        f"reconciles {m['reconciles'] if m else '?'}, last write {watch.last_change - start:.1f} s after start)")
    return {"steady_s": None, "reconciled_s": reconciled_at, "reconciles_reached_s": count_at,
            "last_write_s": watch.last_change - start, "reconciled": done, "metrics": m}


def steady_minute(api, op, seconds):
    """`seconds` with nothing changing: operator and apiserver writes, scaled to a minute."""
    before_api, before_op = apiserver_requests(api), op.metrics()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        time.sleep(min(10, seconds - (time.monotonic() - start)))
        m = op.metrics()
        log(f"steady: {time.monotonic() - start:.0f}/{seconds} s; operator writes so far "
            f"{fmt(sub(m and m['writes'], before_op and before_op['writes']))}")
    elapsed = time.monotonic() - start
    after_api, after_op = apiserver_requests(api), op.metrics()
    scale = 60.0 / elapsed
    op_writes = sub(after_op and after_op["writes"], before_op and before_op["writes"])
    summary = apiserver_summary(delta(after_api, before_api))
    return {
        "seconds": round(elapsed, 1),
        "operator_writes_per_min": None if op_writes is None else round(op_writes * scale, 1),
        "operator_reconciles_per_min": rnd(mul(sub(after_op and after_op["reconciles"],
                                                   before_op and before_op["reconciles"]), scale)),
        "apiserver_writes_per_min": round(summary["writes"] * scale, 1),
        "apiserver": summary,
    }


def mul(a, b):
    return None if a is None else a * b


def sub(a, b):
    return None if a is None or b is None else a - b


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.1f}{unit}"
    return f"{v:,}{unit}"


# ---------------------------------------------------------------- the run


def operator_args(binary, extra):
    """The bench's operator arguments: each tuning flag --help lists, at the default it states
    (so the JSON says what ran), unless OPERATOR_ARGS sets it; then OPERATOR_ARGS."""
    r = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise BenchError(f"{binary} --help failed: {r.stdout.strip()}")
    options = help_options(r.stdout)
    args = []
    for flag in TUNING_FLAGS:
        if flag not in options or any(a == flag or a.startswith(flag + "=") for a in extra):
            continue
        default = re.search(r"\[default: ([^\]]+)\]", options[flag])
        if default:
            args.append(f"{flag}={default.group(1)}")
        else:
            log(f"note: the operator has {flag} but --help states no default; not passing it")
    return args + extra


def help_options(text):
    """clap's --help: {"--flag": the option's text (its line and description)}."""
    options, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s+(?:-\w, )?(--[\w-]+)", line)
        if m:
            current = m.group(1)
            options[current] = line
        elif current and line.startswith(" "):
            options[current] += "\n" + line
        else:
            current = None
    return options


def git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "operator/src", "operator/Cargo.toml",
                                "Cargo.toml", "Cargo.lock"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def run(opts):
    binary = opts.operator_bin
    if not os.access(binary, os.X_OK):
        raise BenchError(f"no operator binary at {binary}: run `cargo build --release --locked -p zeronas-operator` "
                         "(or make bench-operator)")
    extra = shlex.split(os.environ.get("OPERATOR_ARGS", ""))
    args = operator_args(binary, extra)
    n, total = opts.volumes, 2 * opts.volumes
    ports = {"etcd": opts.etcd_port, "api": opts.api_port, "cidr": opts.service_cidr}
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(), "cores": os.cpu_count(), "volumes_new": n, "volumes_existing": total,
        "operator_binary": os.path.relpath(binary, REPO),
        "operator_binary_built": datetime.datetime.fromtimestamp(os.path.getmtime(binary), datetime.timezone.utc)
        .isoformat(timespec="seconds"),
        "operator_args": args, "control_plane": dict(ports, kcm_controllers=KCM_CONTROLLERS),
        "timeout_s": opts.timeout,
    }
    log(f"{n} new, then {total} existing NasVolumes; operator args: {' '.join(args) or '(none)'}")
    os.makedirs(OUT, exist_ok=True)
    if os.path.exists(CP_DIR):
        controlplane("down", ports)  # a run cut short may have left its processes
        shutil.rmtree(CP_DIR)
    op = None
    try:
        controlplane("up", ports)
        api = Api(ports["api"], os.path.join(CP_DIR, "pki"))
        install_crd(api)
        kubeconfig, identity = service_account_kubeconfig(api, ports["api"])
        result["operator_identity"] = identity
        log(f"CRD established, namespace created; the operator runs as {identity} with the chart's RBAC")

        # A. create
        op = Operator(binary, kubeconfig, args, "create")
        op.wait_ready()
        api_a0, bench_a0 = apiserver_requests(api), api.counted()
        created_at = time.monotonic()
        uids = create_volumes(api, 1, n)
        create_s = time.monotonic() - created_at
        log(f"created {n} NasVolumes in {create_s:.1f} s")
        wait_s, reached = wait_reconciled(api, op, uids, opts.timeout, f"create {n}")
        result["create"] = {
            "creation_s": round(create_s, 1),
            "reconciled_after_creation_s": rnd(wait_s),
            "reconciled_after_start_s": rnd(wait_s and wait_s + create_s),
            "reconciled": reached,
        }
        second_at = time.monotonic()
        uids.update(create_volumes(api, n + 1, n))
        create2_s = time.monotonic() - second_at
        log(f"created {n} more NasVolumes in {create2_s:.1f} s")
        wait2_s, reached2 = wait_reconciled(api, op, uids, opts.timeout, f"create {n} more ({total} in all)")
        m_a = op.metrics()
        api_a1, bench_a1 = apiserver_requests(api), api.counted()
        result["create"].update({
            "second_batch_creation_s": round(create2_s, 1),
            "second_batch_reconciled_after_creation_s": rnd(wait2_s),
            "all_reconciled": reached2,
            "operator": m_a,
            "apiserver": apiserver_summary(delta(api_a1, api_a0)),
            "bench_requests": delta(bench_a1, bench_a0),
        })
        idle = wait_idle(api, op, IDLE_TIMEOUT)
        log(f"operator idle: no write for {QUIET_SECONDS:g} s" if idle else
            f"operator not idle after {IDLE_TIMEOUT} s (it still writes); stopping it anyway")
        result["create"]["idle_before_stop"] = idle
        op.metrics()
        op.stop()
        result["create"]["rss_peak_mib"] = round(op.rss_peak_kib / 1024, 1)
        rss = [op.rss_peak_kib]

        # B. restart
        api_b0, bench_b0 = apiserver_requests(api), api.counted()
        op = Operator(binary, kubeconfig, args, "restart")
        seen = wait_steady(api, op, uids, opts.timeout, api_b0)
        api_b1, bench_b1 = apiserver_requests(api), api.counted()
        m_b = seen.pop("metrics")
        result["restart"] = {
            **{k: rnd(v) if isinstance(v, float) else v for k, v in seen.items()},
            "operator_writes": m_b and m_b["writes"],
            "operator_errors_5xx_429": m_b and m_b["errors"],
            "operator": m_b,
            "apiserver": apiserver_summary(delta(api_b1, api_b0)),
            "bench_requests": delta(bench_b1, bench_b0),
        }

        # C. steady
        log(f"steady: {opts.steady_seconds} s with nothing changing")
        result["steady"] = steady_minute(api, op, opts.steady_seconds)
        op.metrics()
        op.stop()
        rss.append(op.rss_peak_kib)
        result["restart"]["rss_peak_mib"] = round(op.rss_peak_kib / 1024, 1)
        result["rss_peak_mib"] = round(max(rss) / 1024, 1)
        op = None
    finally:
        if op is not None:
            op.stop()
        try:
            controlplane("down", ports)
            shutil.rmtree(os.path.join(CP_DIR, "etcd"), ignore_errors=True)
        except BenchError as e:
            log(str(e))
    return result


def rnd(v):
    return None if v is None else round(v, 1)


def report(result, opts):
    n, total = result["volumes_new"], result["volumes_existing"]
    create, restart, steady = result["create"], result["restart"], result["steady"]
    api_errors = create["apiserver"]["errors_5xx_429"] + restart["apiserver"]["errors_5xx_429"]
    bench_errors = sum(v for phase in (create, restart) for k, v in phase["bench_requests"].items() if " " in k)
    op_errors = sub_none_sum(create["operator"] and create["operator"]["errors"], restart["operator_errors_5xx_429"])
    rows = [
        (f"{n:,} new NasVolumes fully reconciled (after creation ended)",
         secs(create["reconciled_after_creation_s"], f"{create['reconciled']:,}/{n:,} reached") +
         (f" ({create['reconciled_after_start_s']} s after it started)" if create["reconciled_after_start_s"] else ""),
         f"< {GOAL_CREATE_S} s",
         met(create["reconciled_after_creation_s"], lambda v: v < GOAL_CREATE_S, timed_out=True)),
        (f"restart with {total:,} existing: steady state",
         secs(restart["steady_s"], "not reached"),
         f"< {GOAL_RESTART_S} s", met(restart["steady_s"], lambda v: v < GOAL_RESTART_S, timed_out=True)),
        ("API writes during the restart (operator's metric)",
         or_estimate(restart["operator_writes"], restart["apiserver"]["operator_kind_writes"]),
         "0", met(restart["operator_writes"], lambda v: v == 0)),
        ("API writes during the restart (apiserver, incl. controller-manager)",
         fmt(restart["apiserver"]["writes"]), "-", ""),
        ("apiserver 5xx + 429 during create and restart",
         fmt(api_errors) + (f" ({bench_errors:,} to the bench's own requests)" if bench_errors else ""),
         "0", met(api_errors, lambda v: v == 0)),
        ("5xx + 429 seen by the operator (its metric)", fmt(op_errors), "0", met(op_errors, lambda v: v == 0)),
        ("operator RSS peak (VmHWM)", fmt(result["rss_peak_mib"], " MiB"), f"< {GOAL_RSS_MIB} MiB",
         met(result["rss_peak_mib"], lambda v: v < GOAL_RSS_MIB)),
        ("API writes/min at steady state (operator's metric)",
         or_estimate(steady["operator_writes_per_min"],
                     round(steady["apiserver"]["operator_kind_writes"] * 60 / steady["seconds"], 1)), "0",
         met(steady["operator_writes_per_min"], lambda v: v == 0)),
        ("API writes/min at steady state (apiserver, incl. controller-manager)",
         fmt(steady["apiserver_writes_per_min"]), "-", ""),
    ]
    width = [max(len(r[i]) for r in rows + [("figure", "measured", "goal", "met?")]) for i in range(4)]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, width)).rstrip()
    print()
    print(f"zeronas-operator at {total:,} NasVolumes ({result['cores']} cores, {result['commit'][:12]}, "
          f"args: {' '.join(result['operator_args']) or 'defaults'})")
    print(line(("figure", "measured", "goal", "met?")))
    print("-+-".join("-" * w for w in width))
    for r in rows:
        print(line(r))
    print()
    print(f"also: {n:,} more created in {create['second_batch_creation_s']} s; all {total:,} reconciled "
          f"{secs(create['second_batch_reconciled_after_creation_s'], 'not within the timeout')} after that "
          f"({create['all_reconciled']:,} reached). Restart: all reconciled at "
          f"{secs(restart['reconciled_s'], 'never')}, reconciles >= {total:,} at "
          f"{secs(restart['reconciles_reached_s'], 'never')}, last write at {secs(restart['last_write_s'], '?')}")
    print(f"      apiserver writes in the restart by request: {top(restart['apiserver']['writes_by_request'])}")
    print(f"      apiserver writes at steady state ({steady['seconds']} s): "
          f"{top(steady['apiserver']['writes_by_request'])}")
    if restart["operator_writes"] is None:
        print(f"note: the operator has no {OPERATOR_API_METRIC}; its writes are estimated from the apiserver's "
              "(every server-side apply, and any write to NasVolumes, Services, NetworkPolicies, Secrets)")
    if n != 1000:
        print(f"note: the goals are for 1,000 new and 2,000 existing NasVolumes; this run used {n:,} and {total:,}")
    print(f"reproduce: {reproduce(opts)}   (JSON: {os.path.relpath(opts.json, REPO)})")
    return all(r[3] != "no" for r in rows)


def reproduce(opts):
    """The command that runs this bench again with the same settings."""
    settings = [("BENCH_VOLUMES", opts.volumes, 1000), ("BENCH_TIMEOUT", opts.timeout, 600),
                ("BENCH_STEADY_SECONDS", opts.steady_seconds, 60), ("BENCH_QUIET_SECONDS", QUIET_SECONDS, 5),
                ("OPERATOR_ARGS", os.environ.get("OPERATOR_ARGS", ""), "")]
    env = [f"{k}={shlex.quote(str(v))}" for k, v, default in settings if v != default]
    return " ".join(env + ["make bench-operator"])


def or_estimate(v, estimate):
    """The operator's own figure, or (without its API metric) the apiserver-side estimate."""
    return fmt(v) if v is not None else f"n/a (apiserver estimate: {fmt(estimate)})"


def sub_none_sum(a, b):
    return None if a is None or b is None else a + b


def secs(v, missing):
    return missing if v is None else f"{v} s"


def met(v, ok, timed_out=False):
    """yes/no; a missing figure is "no" when it means a timeout, else "n/a" (no metric)."""
    if v is None:
        return "no" if timed_out else "n/a"
    return "yes" if ok(v) else "no"


def top(by_request, k=6):
    items = list(by_request.items())[:k]
    return ", ".join(f"{name} {count:,}" for name, count in items) or "none"


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--volumes", type=int, default=int(env("BENCH_VOLUMES", "1000")),
                   help="NasVolumes in the first batch; twice that exist for the restart (default 1000)")
    p.add_argument("--timeout", type=int, default=int(env("BENCH_TIMEOUT", "600")), help="seconds per wait")
    p.add_argument("--steady-seconds", type=int, default=int(env("BENCH_STEADY_SECONDS", "60")))
    p.add_argument("--operator-bin",
                   default=env("OPERATOR_BIN", os.path.join(REPO, "target", "release", "zeronas-operator")))
    # Not ETCD_PORT/API_PORT: a shell that exported the e2e's ports must not move the bench onto them.
    p.add_argument("--etcd-port", type=int, default=int(env("BENCH_ETCD_PORT", "23890")))
    p.add_argument("--api-port", type=int, default=int(env("BENCH_API_PORT", "16543")))
    p.add_argument("--service-cidr", default=env("BENCH_SERVICE_CIDR", "10.0.0.0/16"))
    p.add_argument("--json", default=os.path.join(OUT, "operator.json"))
    p.add_argument("--check", action="store_true", help="exit 2 when a goal is missed")
    opts = p.parse_args()
    if opts.volumes < 1:
        p.error("--volumes must be at least 1")
    # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C: the operator and the control plane stop.
    signal.signal(signal.SIGTERM, interrupted)
    try:
        result = run(opts)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    os.makedirs(os.path.dirname(opts.json), exist_ok=True)
    all_met = report(result, opts)
    result["all_goals_met"] = all_met
    with open(opts.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 2 if opts.check and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
