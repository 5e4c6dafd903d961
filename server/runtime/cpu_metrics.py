"""Prometheus series for the CPU runtime's precision choice: what each model runs at and what was measured.

Read from the registry's loaded versions at scrape time (as gpu_metrics.py does), so the series appear and
disappear with the model without bookkeeping:
- twofour_cpu_precision{model,version,precision}: 1 for the precision served, 0 for the other candidates
- twofour_cpu_precision_speedup{...}: fp32 median time / this precision's, at load (timed candidates only)
- twofour_cpu_precision_min_cosine{...}: lowest per-row cosine to fp32 on the load-time sample
"""

from __future__ import annotations

from typing import Any

from prometheus_client.core import GaugeMetricFamily

from server.runtime.scrape_collector import Families, VersionFactsCollector

LABELS = ["model", "version", "precision"]


class CpuPrecisionCollector(VersionFactsCollector):
    def families(self) -> Families:
        return {
            "chosen": GaugeMetricFamily("twofour_cpu_precision",
                                        "1 for the CPU precision the model version runs at, 0 for the other "
                                        "candidates", labels=LABELS),
            "speedup": GaugeMetricFamily("twofour_cpu_precision_speedup",
                                         "Measured fp32 time / this precision's time at load, on the model's batch "
                                         "shape", labels=LABELS),
            "cosine": GaugeMetricFamily("twofour_cpu_precision_min_cosine",
                                        "Lowest per-row cosine of this precision's outputs to fp32's at load",
                                        labels=LABELS),
        }

    def add_version(self, families: Families, model: str, version: str, details: dict[str, Any]) -> None:
        decision = details.get("cpu_precision")
        if not decision:
            return
        for candidate in decision.get("candidates", []):
            labels = [model, version, candidate["precision"]]
            families["chosen"].add_metric(labels, 1.0 if candidate["precision"] == decision["chosen"] else 0.0)
            if candidate.get("speedup") is not None:
                families["speedup"].add_metric(labels, float(candidate["speedup"]))
            families["cosine"].add_metric(labels, float(candidate["min_cosine"]))
