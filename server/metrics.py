"""Prometheus metrics and Triton-style model statistics, fed by the same measurements.

Everything is registered on an explicit CollectorRegistry handed in by the app (no global state). Per-request
series live in `server.model_series`: each (model, version) has a `ModelRecorder` whose plain numbers feed both
the Prometheus families (built at scrape time) and ModelStatistics / `/stats`, so the two can never disagree.
Series that change only at load (weights, load time) are ordinary prometheus_client gauges.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.model_series import (
    BatchStat,
    DurationStat,
    ModelRecorder,
    RecorderCollector,
    VersionStats,
)

__all__ = ["BatchStat", "DurationStat", "GpuMemoryCollector", "Metrics",
           "ModelRecorder", "VersionStats"]


class Metrics:
    """All series of one server process."""

    def __init__(self, registry: CollectorRegistry | None = None, gpu: bool | None = None) -> None:
        """`gpu`: export per-device GPU memory (None = when CUDA is available)."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        labels = ("model", "version")
        self._recorders: dict[tuple[str, str], ModelRecorder] = {}
        r.register(RecorderCollector(self._recorders))
        self.load_duration = Gauge("twofour_model_load_duration_seconds", "Time the last load took", labels, registry=r)
        self.weight_bytes = Gauge(
            "twofour_weight_bytes", "Resident weight bytes by kind", (*labels, "kind"), registry=r
        )
        self.weight_dense_equivalent_bytes = Gauge(
            "twofour_weight_dense_equivalent_bytes", "Bytes the same weights would take dense", labels, registry=r
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if gpu is None:
            gpu = _cuda_available()
        if gpu:
            r.register(GpuMemoryCollector())

    def recorder(self, model: str, version: str) -> ModelRecorder:
        key = (model, version)
        recorder = self._recorders.get(key)
        if recorder is None:
            recorder = self._recorders[key] = ModelRecorder()
        return recorder

    def stats(self, model: str, version: str) -> VersionStats | None:
        recorder = self._recorders.get((model, version))
        return recorder.stats if recorder else None

    def weights(self, model: str, version: str, bytes_by_kind: dict[str, int], dense_equivalent: int,
                load_seconds: float) -> None:
        """What a load left resident, and how long it took."""
        for kind, n in bytes_by_kind.items():
            self.weight_bytes.labels(model, version, kind).set(n)
        self.weight_dense_equivalent_bytes.labels(model, version).set(dense_equivalent)
        self.load_duration.labels(model, version).set(load_seconds)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class GpuMemoryCollector(Collector):
    """GPU memory used/total per device, read at scrape time (torch.cuda.mem_get_info), never cached.

    Reading at scrape time keeps the numbers exact without a polling thread; a device that cannot be read (lost,
    reset) is skipped rather than failing the whole scrape.
    """

    def __init__(self, device_count: int | None = None) -> None:
        if device_count is None:
            import torch

            device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.device_count = device_count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily("twofour_gpu_memory_used_bytes", "GPU memory in use on the device (all processes)",
                                 labels=("device",))
        total = GaugeMetricFamily("twofour_gpu_memory_total_bytes", "GPU memory on the device", labels=("device",))
        import torch

        # never create a CUDA context just to be scraped: before the runtime initialises CUDA there is nothing of
        # ours on the device to report
        initialised = self.device_count and torch.cuda.is_initialized()
        for index in range(self.device_count if initialised else 0):
            try:
                free, size = torch.cuda.mem_get_info(index)
            except Exception:  # noqa: BLE001 - one unreadable device must not break /metrics
                continue
            used.add_metric([str(index)], float(size - free))
            total.add_metric([str(index)], float(size))
        yield used
        yield total
