#!/usr/bin/env python3
"""Checks the chart's monitoring files against promtool and against real scrapes.

    check_monitoring.py --promtool PROMTOOL [--scrape FILE ...]

- Every PromQL expression of the rules (files/prometheus-rules.yaml) and of the dashboard
  (files/dashboard.json, Grafana variables replaced by plain values) must parse: they are
  written into one rule file that `promtool check rules` reads.
- Every recorded series an expression names (`level:metric:operation`) must be recorded by
  a rule.
- With --scrape (exposition texts of a real dataplane and a real operator): every metric
  an expression names must be exposed by one of them, and every label it matches or groups
  by must be a label of those scrapes or one Prometheus adds (the PodMonitor's target
  labels, `le`), so a renamed metric or label fails here and not on a user's dashboard;
  and each scrape must pass `promtool check metrics` (naming conventions, help texts),
  read as Prometheus reads it.

Exit status 1 with one line per problem; 0 with a summary.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"

# Grafana's variables, as a query with every volume selected sends them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$namespace": ".*",
    "$nasvolume": ".*",
}

# Labels a scrape does not carry: Prometheus' target labels (the PodMonitor adds
# nasvolume) and the histogram bucket bound.
TARGET_LABELS = {"namespace", "pod", "nasvolume", "job", "instance", "container", "le"}
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_REPLACE = re.compile(r"label_replace\(.*?,\s*\"([a-zA-Z_][a-zA-Z0-9_]*)\"", re.S)

# A metric name: zeronas_… (exposed) or level:zeronas_…:operation (recorded).
NAME = re.compile(r"(?<![A-Za-z0-9_:\"])((?:[a-z_]+:)?zeronas_[a-z0-9_]+(?::[a-z0-9_]+)?)")


def rule_expressions(rules):
    """(origin, expr) of every rule, and the names recorded."""
    found, recorded = [], set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            found.append((f"rule {name}", rule["expr"]))
            if "record" in rule:
                recorded.add(rule["record"])
    return found, recorded


def dashboard_expressions(dashboard):
    """(origin, expr) of every panel target, and the metric selectors of the variables."""
    found, selectors = [], []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.+),\s*[a-z_]+\)", query or "")
        if m:
            selectors.append((f"variable {var['name']}", m.group(1)))
    return found, selectors


def as_promql(expr):
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def names_in(expr):
    """Metric names in `expr`, minus label values and strings."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(NAME.findall(without_strings))


def labels_in(expr):
    """Label names `expr` matches on or groups by."""
    labels = set(MATCHER.findall(expr))
    for group in GROUPING.findall(expr):
        labels.update(l.strip() for l in group.split(",") if l.strip())
    return labels


def exposed_labels(text):
    """Label names on the samples of a scrape."""
    labels = set()
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" in line:
            labels.update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', line.split("}", 1)[0]))
    return labels


def exposed_names(text):
    """Sample names a scrape exposes, including families declared without samples yet."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            if kind == "counter":
                names.add(family + "_total")
            elif kind == "histogram":
                names.update(family + s for s in ("_bucket", "_sum", "_count"))
            else:
                names.add(family)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def as_prometheus_text(text):
    """The 0.0.4 text form of an OpenMetrics exposition, as Prometheus stores it: counter
    families take their `_total` name, `# EOF` and `# UNIT` go (promtool check metrics
    reads only the 0.0.4 form)."""
    counters = set()
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            counters.add(line.split()[2])
    out = []
    for line in text.splitlines():
        if line in ("# EOF",) or line.startswith("# UNIT "):
            continue
        if line.startswith(("# HELP ", "# TYPE ")):
            parts = line.split(" ", 3)
            if parts[2] in counters:
                parts[2] += "_total"
            line = " ".join(parts)
        out.append(line)
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", required=True)
    parser.add_argument("--scrape", action="append", default=[], type=Path)
    args = parser.parse_args()
    problems = []

    rules = yaml.safe_load(RULES.read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    rule_exprs, recorded = rule_expressions(rules)
    panel_exprs, selectors = dashboard_expressions(dashboard)
    if not panel_exprs:
        problems.append("the dashboard has no queries")

    # Parse every dashboard expression with promtool, as one rule file.
    checks = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, (origin, expr) in enumerate(panel_exprs + selectors):
        try:
            checks["groups"][0]["rules"].append(
                {"record": f"dashboard_check:{i}", "expr": as_promql(expr)}
            )
        except ValueError as e:
            problems.append(f"{origin}: {e}")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(checks, f)
        f.flush()
        for path in (str(RULES), f.name):
            r = subprocess.run([args.promtool, "check", "rules", path], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"promtool check rules {path}:\n{r.stdout}{r.stderr}")

    named = {}
    for origin, expr in rule_exprs + panel_exprs + selectors:
        for name in names_in(expr):
            named.setdefault(name, origin)
    for name, origin in sorted(named.items()):
        if ":" in name and name not in recorded:
            problems.append(f"{origin}: {name} is recorded by no rule")

    exposed, labels = set(), set(TARGET_LABELS)
    for scrape in args.scrape:
        text = scrape.read_text()
        exposed |= exposed_names(text)
        labels |= exposed_labels(text)
        r = subprocess.run(
            [args.promtool, "check", "metrics"],
            input=as_prometheus_text(text),
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            problems.append(f"promtool check metrics {scrape}:\n{r.stdout}{r.stderr}")
    raw = sorted(n for n in named if ":" not in n)
    if args.scrape:
        for name in raw:
            if name not in exposed:
                problems.append(f"{named[name]}: {name} is exposed by no scrape")
        exprs = rule_exprs + panel_exprs
        for _, expr in exprs:
            labels.update(LABEL_REPLACE.findall(expr))
        for origin, expr in exprs:
            for label in sorted(labels_in(expr) - labels):
                problems.append(f"{origin}: label {label} is on no scraped series")

    for p in problems:
        print(f"check_monitoring: {p}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"check_monitoring: {len(rule_exprs)} rules and {len(panel_exprs)} dashboard queries parse; "
        f"{len(raw)} metrics named"
        + (f", all exposed, with every label used, by {len(args.scrape)} real scrapes" if args.scrape else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
