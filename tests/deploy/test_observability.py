"""The dashboard, the autoscaling rule and the scrape config name series the server really exports.

Names come from the server's own `Metrics` registry (the one /metrics serves), expanded the way the Prometheus
exposition format does (a counter `x` is scraped as `x_total`, a histogram as `x_bucket`/`x_sum`/`x_count`).
"""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from server.metrics import Metrics
from server.transport.grpc_front_metrics import FrontCollector
from tests.deploy.manifests import DEPLOY, Doc, find

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",),
            "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "unknown": ("",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def exported_series() -> set[str]:
    """Every series name a twofour server can expose, GPU gauges included (registered as on a CUDA host) and the
    gRPC front process's (registered by the app as with the default front process)."""
    metrics = Metrics(gpu=True)
    metrics.registry.register(FrontCollector(os.getpid, lambda: 0))
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Series selectors in a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    tokens = re.findall(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", expr)
    return {t for t in tokens if t.lower() not in PROMQL_WORDS}


def test_promql_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le) (rate(twofour_x_bucket{model=~"$model"}[$__rate_interval])))'
            ' / clamp_min(sum(rate(b_total[2m])) by (pod), 1e-9) and on (pod) up')
    assert metric_names(expr) == {"twofour_x_bucket", "b_total", "up"}


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "twofour.json").read_text())


def panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_dashboard_queries_only_exported_series() -> None:
    exported = exported_series()
    board = dashboard()
    used: set[str] = set()
    for panel in panels(board):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no series in {target['expr']}"
            used |= names
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            used |= set(re.findall(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", variable["query"]["query"]))
    assert used - exported == set(), "series the server does not export"


def test_dashboard_covers_the_issue_list() -> None:
    exprs = " ".join(t["expr"] for p in panels(dashboard()) for t in p["targets"])
    for series in ("twofour_request_success_total", "twofour_request_duration_seconds_bucket",
                   "twofour_queue_duration_seconds_sum", "twofour_batch_size_bucket", "twofour_weight_bytes",
                   "twofour_weight_dense_equivalent_bytes", "twofour_gpu_memory_used_bytes"):
        assert series in exprs, series
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(twofour_request_duration_seconds_bucket" in exprs
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def adapter_rule() -> dict:
    values = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    return rule


def test_hpa_metric_is_served_by_the_adapter_rule(rendered: dict[str, list[Doc]]) -> None:
    rule = adapter_rule()
    exported = exported_series()
    series = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)\{", rule["seriesQuery"])
    assert series and series.group(1) in exported
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    query = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'pod="p"').replace("<<.GroupBy>>", "pod")
    assert metric_names(query) and metric_names(query) <= exported
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    for docs in rendered.values():
        hpa = find(docs, "HorizontalPodAutoscaler", "twofour")
        by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert by_type["Pods"]["pods"]["metric"]["name"] == rule["name"]["as"]
        assert by_type["Resource"]["resource"]["name"] == "cpu", "CPU is the fallback"
        assert hpa["spec"]["scaleTargetRef"]["name"] == find(docs, "Deployment", "twofour")["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] >= 2, "one pod can always be disrupted (the PodDisruptionBudget)"


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_servicemonitor_scrapes_the_metrics_port(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    monitor = find(docs, "ServiceMonitor", "twofour")
    service = find(docs, "Service", "twofour")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
