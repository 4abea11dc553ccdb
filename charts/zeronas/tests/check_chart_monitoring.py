#!/usr/bin/env python3
"""Checks the monitoring objects of a rendered chart (helm template with the PodMonitor,
the PrometheusRule, the dashboard and the ServiceMonitor enabled):

    check_chart_monitoring.py RENDERED.yaml

- the PrometheusRule carries exactly the groups of files/prometheus-rules.yaml (the file
  promtool tests) and the extra labels asked for;
- the dashboard ConfigMap carries exactly files/dashboard.json, valid JSON, under the
  label Grafana's sidecar watches;
- the PodMonitor selects the dataplane pods in every namespace on port `metrics` and
  names the NasVolume `nasvolume`;
- the ServiceMonitor honours the operator's namespace label.
"""

import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent


def fail(why):
    print(f"check_chart_monitoring: {why}", file=sys.stderr)
    sys.exit(1)


def main():
    docs = [d for d in yaml.safe_load_all(Path(sys.argv[1]).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    (rule,) = by_kind.get("PrometheusRule") or fail("no PrometheusRule")
    if rule["spec"] != rules:
        fail("the PrometheusRule's groups differ from files/prometheus-rules.yaml")
    if rule["metadata"]["labels"].get("release") != "kps":
        fail("the PrometheusRule lacks the extra label release=kps")

    dashboards = [
        c for c in by_kind.get("ConfigMap", []) if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    if len(dashboards) != 1:
        fail(f"{len(dashboards)} ConfigMaps carry grafana_dashboard: \"1\"")
    shipped = json.loads((CHART / "files" / "dashboard.json").read_text())
    if json.loads(dashboards[0]["data"]["zeronas.json"]) != shipped:
        fail("the dashboard ConfigMap differs from files/dashboard.json")

    (pm,) = by_kind.get("PodMonitor") or fail("no PodMonitor")
    spec = pm["spec"]
    if spec.get("namespaceSelector") != {"any": True}:
        fail("the PodMonitor does not look in every namespace")
    want = {"app.kubernetes.io/name": "zeronas-dataplane", "app.kubernetes.io/managed-by": "zeronas-operator"}
    if spec["selector"]["matchLabels"] != want:
        fail(f"the PodMonitor selects {spec['selector']['matchLabels']}, not the dataplane pods")
    (endpoint,) = spec["podMetricsEndpoints"]
    if endpoint["port"] != "metrics":
        fail("the PodMonitor scrapes another port than `metrics`")
    relabel = {(r["sourceLabels"][0], r["targetLabel"]) for r in endpoint["relabelings"]}
    if ("__meta_kubernetes_pod_label_zeronas_io_volume", "nasvolume") not in relabel:
        fail("the PodMonitor does not label series with the NasVolume's name")

    (sm,) = by_kind.get("ServiceMonitor") or fail("no ServiceMonitor")
    if not all(e.get("honorLabels") for e in sm["spec"]["endpoints"]):
        fail("the ServiceMonitor does not honour the operator's labels")
    print("check_chart_monitoring: PodMonitor, PrometheusRule, dashboard and ServiceMonitor as shipped")


if __name__ == "__main__":
    main()
