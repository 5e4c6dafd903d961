"""Prometheus series for the GPU runtime: per-layer kernel choice and speedup, and PyTorch's own GPU memory.

A custom collector that reads the registry's loaded versions at scrape time, instead of gauges set at load:
the kernel table then appears and disappears with the model (load, reload, unload) without any bookkeeping,
and memory is read when Prometheus asks, not when a model happened to load. Device-wide used/total memory is
metrics.py's GpuMemoryCollector; this adds what PyTorch's allocator holds (our weights and workspaces). The app
registers it once:
`metrics.registry.register(GpuCollector(registry))`.
"""

from __future__ import annotations

from typing import Any

import torch
from prometheus_client.core import GaugeMetricFamily

from server.runtime.scrape_collector import Families, VersionFactsCollector

LAYER_LABELS = ["model", "version", "layer", "batch"]


class GpuCollector(VersionFactsCollector):
    def families(self) -> Families:
        return {
            "kernel": GaugeMetricFamily("twofour_layer_sparse_kernel",
                                        "1 when the 2:4 layer runs on the sparse kernel at this batch size, 0 when "
                                        "dense", labels=LAYER_LABELS),
            "speedup": GaugeMetricFamily("twofour_layer_sparse_speedup",
                                         "Measured dense time / 2:4 time for the layer at this batch size (at load)",
                                         labels=LAYER_LABELS),
            "memory": GaugeMetricFamily("twofour_gpu_torch_memory_bytes",
                                        "GPU memory held by this process's PyTorch allocator: allocated or reserved",
                                        labels=["device", "kind"]),
        }

    def add_version(self, families: Families, model: str, version: str, details: dict[str, Any]) -> None:
        for layer in details.get("layers", []):
            _add_layer(families, model, version, layer)

    def extra(self, families: Families) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # never create a CUDA context to scrape
            for index in range(torch.cuda.device_count()):
                try:
                    held = (("allocated", torch.cuda.memory_allocated(index)),
                            ("reserved", torch.cuda.memory_reserved(index)))
                except Exception:  # noqa: BLE001 - one unreadable device must not break /metrics
                    continue
                for kind, value in held:
                    families["memory"].add_metric([str(index), kind], float(value))


def _add_layer(families: Families, model: str, version: str, layer: dict[str, Any]) -> None:
    for bucket in layer.get("buckets", []):
        labels = [model, version, layer["layer"], str(bucket["batch"])]
        families["kernel"].add_metric(labels, 1.0 if bucket["kernel"] == "sparse" else 0.0)
        families["speedup"].add_metric(labels, float(bucket["speedup"]))
