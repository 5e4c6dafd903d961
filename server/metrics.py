"""Prometheus metrics and Triton-style model statistics, fed by the same measurements.

Everything is registered on an explicit CollectorRegistry handed in by the app (no global state), and every
observation goes through `ModelRecorder`, which updates the Prometheus series and the counters behind
ModelStatistics / `/stats` in one call, so the two can never disagree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# 100 µs .. 10 s, roughly x2.5 per step: resolves both sub-millisecond CPU calls and slow GPU batches.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass
class DurationStat:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class BatchStat:
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)


@dataclass
class VersionStats:
    """The numbers ModelStatistics reports for one (model, version)."""

    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: DurationStat = field(default_factory=DurationStat)
    fail: DurationStat = field(default_factory=DurationStat)
    queue: DurationStat = field(default_factory=DurationStat)
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)
    batch: dict[int, BatchStat] = field(default_factory=dict)


class Metrics:
    """All series of one server process."""

    def __init__(self, registry: CollectorRegistry | None = None, gpu: bool | None = None) -> None:
        """`gpu`: export per-device GPU memory (None = when CUDA is available)."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        labels = ("model", "version")
        self.success = Counter("twofour_request_success", "Successful inference requests", labels, registry=r)
        self.failure = Counter("twofour_request_failure", "Failed inference requests", (*labels, "reason"), registry=r)

        def hist(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, labels, buckets=DURATION_BUCKETS, registry=r)

        self.request_duration = hist("twofour_request_duration_seconds", "End-to-end request time in the server")
        self.queue_duration = hist("twofour_queue_duration_seconds", "Time a request waited in the queue")
        self.compute_input_duration = hist("twofour_compute_input_duration_seconds", "Batch assembly per request")
        self.compute_infer_duration = hist("twofour_compute_infer_duration_seconds", "Model execution per request")
        self.compute_output_duration = hist("twofour_compute_output_duration_seconds", "Output split per request")
        self.batch_size = Histogram(
            "twofour_batch_size", "Rows in each executed batch", labels, buckets=BATCH_BUCKETS, registry=r
        )
        self.pending = Gauge("twofour_pending_requests", "Requests queued or running", labels, registry=r)
        # Counter appends `_total`: twofour_inference_total / twofour_execution_total. Their ratio is the mean
        # executed batch size, the number that tells whether 2:4 kernels are getting batches big enough to pay.
        self.inferences = Counter("twofour_inference", "Inferences (rows) computed", labels, registry=r)
        self.executions = Counter("twofour_execution", "Model executions (batches) run", labels, registry=r)
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
        self._recorders: dict[tuple[str, str], ModelRecorder] = {}

    def recorder(self, model: str, version: str) -> "ModelRecorder":
        key = (model, version)
        if key not in self._recorders:
            self._recorders[key] = ModelRecorder(self, model, version)
        return self._recorders[key]

    def stats(self, model: str, version: str) -> VersionStats | None:
        recorder = self._recorders.get((model, version))
        return recorder.stats if recorder else None


class ModelRecorder:
    """One (model, version)'s view of the metrics; the batcher and dataplane call only this."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.stats = VersionStats()
        self._lock = threading.Lock()
        lv = (model, version)
        self._success = metrics.success.labels(*lv)
        self._failure = metrics.failure
        self._labels = lv
        self._request = metrics.request_duration.labels(*lv)
        self._queue = metrics.queue_duration.labels(*lv)
        self._cin = metrics.compute_input_duration.labels(*lv)
        self._cinfer = metrics.compute_infer_duration.labels(*lv)
        self._cout = metrics.compute_output_duration.labels(*lv)
        self._batch = metrics.batch_size.labels(*lv)
        self._inferences = metrics.inferences.labels(*lv)
        self._executions = metrics.executions.labels(*lv)
        self.pending = metrics.pending.labels(*lv)
        self._metrics = metrics

    def request_done(self, ok: bool, total_ns: int, reason: str = "") -> None:
        """One request finished (either way); `total_ns` is arrival to response."""
        with self._lock:
            (self.stats.success if ok else self.stats.fail).add(total_ns)
        if ok:
            self._success.inc()
            self._request.observe(total_ns / 1e9)
        else:
            self._failure.labels(*self._labels, reason).inc()

    def request_computed(self, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """Per-request stage durations of a request that was executed."""
        with self._lock:
            s = self.stats
            s.queue.add(queue_ns)
            s.compute_input.add(input_ns)
            s.compute_infer.add(infer_ns)
            s.compute_output.add(output_ns)
        self._queue.observe(queue_ns / 1e9)
        self._cin.observe(input_ns / 1e9)
        self._cinfer.observe(infer_ns / 1e9)
        self._cout.observe(output_ns / 1e9)

    def batch_executed(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One model execution of `rows` inferences."""
        with self._lock:
            s = self.stats
            s.inference_count += rows
            s.execution_count += 1
            s.last_inference_ms = int(time.time() * 1000)
            b = s.batch.setdefault(rows, BatchStat())
            b.compute_input.add(input_ns)
            b.compute_infer.add(infer_ns)
            b.compute_output.add(output_ns)
        self._batch.observe(rows)
        self._inferences.inc(rows)
        self._executions.inc()

    def weights(self, bytes_by_kind: dict[str, int], dense_equivalent: int, load_seconds: float) -> None:
        for kind, n in bytes_by_kind.items():
            self._metrics.weight_bytes.labels(*self._labels, kind).set(n)
        self._metrics.weight_dense_equivalent_bytes.labels(*self._labels).set(dense_equivalent)
        self._metrics.load_duration.labels(*self._labels).set(load_seconds)


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
