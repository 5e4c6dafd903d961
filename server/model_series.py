"""Per-(model, version) request measurements kept as plain numbers, exported to Prometheus at scrape time.

Why not prometheus_client's Counter/Histogram children on the hot path: each observation on those takes its own
lock and walks several Python calls, about a dozen per request on the event loop (measured with
bench/request_path.py: ~15 of the ~65 µs the loop spends per request). Here one lock guards all of a recorder's
numbers, so a request costs one acquisition per call, and `RecorderCollector` turns the numbers into the same
Prometheus families (names, labels, buckets, `_total` / `_bucket` / `_sum` / `_count`) when /metrics is
scraped. ModelStatistics and `/stats` read the very same numbers (`VersionStats`), so the two never disagree.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
    # models that pad (server/batching/ragged.py): tokens in executed batches, and how many of them were padding
    batch_tokens: int = 0
    padding_tokens: int = 0


class Buckets:
    """A histogram's per-bucket counts (Prometheus `le` semantics: a value lands in the first bound >= it).

    No sum here: each histogram's sum is already in VersionStats (durations in ns, rows as inference_count)."""

    __slots__ = ("bounds", "counts")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class Level:
    """The pending-requests gauge: changed only under its scheduler's lock, read at scrape time."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount


STAGES = ("request", "queue", "compute_input", "compute_infer", "compute_output")


class ModelRecorder:
    """One (model, version)'s measurements; the dataplane and the schedulers call only this."""

    def __init__(self) -> None:
        self.stats = VersionStats()
        self.pending = Level()
        self._lock = threading.Lock()
        self._durations = {stage: Buckets(DURATION_BUCKETS) for stage in STAGES}
        self._batch = Buckets(BATCH_BUCKETS)
        self._failures: dict[str, int] = {}

    def request_done(self, ok: bool, total_ns: int, reason: str = "") -> None:
        """One request finished (either way); `total_ns` is arrival to response."""
        with self._lock:
            if ok:
                self.stats.success.add(total_ns)
                self._durations["request"].observe(total_ns / 1e9)
            else:
                self.stats.fail.add(total_ns)
                self._failures[reason] = self._failures.get(reason, 0) + 1

    def request_computed(self, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """Per-request stage durations of a request that was executed."""
        with self._lock:
            s, d = self.stats, self._durations
            s.queue.add(queue_ns)
            s.compute_input.add(input_ns)
            s.compute_infer.add(infer_ns)
            s.compute_output.add(output_ns)
            d["queue"].observe(queue_ns / 1e9)
            d["compute_input"].observe(input_ns / 1e9)
            d["compute_infer"].observe(infer_ns / 1e9)
            d["compute_output"].observe(output_ns / 1e9)

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

    def tokens_executed(self, padding: int, total: int) -> None:
        """One executed batch of a padded model: `total` = rows x padded length, `padding` of them pad tokens."""
        with self._lock:
            self.stats.batch_tokens += total
            self.stats.padding_tokens += padding

    def snapshot(self) -> dict[str, object]:
        """A consistent copy of every series' numbers, taken under the lock (for the collector)."""
        with self._lock:
            s = self.stats
            seconds = {"request": s.success.ns, "queue": s.queue.ns, "compute_input": s.compute_input.ns,
                       "compute_infer": s.compute_infer.ns, "compute_output": s.compute_output.ns}
            return {
                "success": s.success.count, "inferences": s.inference_count, "executions": s.execution_count,
                "failures": dict(self._failures), "pending": self.pending.value,
                "tokens": (s.batch_tokens, s.padding_tokens),
                "batch": (self._batch.cumulative(), float(s.inference_count)),  # a batch histogram's sum is its rows
                **{stage: (buckets.cumulative(), seconds[stage] / 1e9) for stage, buckets in self._durations.items()},
            }


DOCS = {"request": "End-to-end request time in the server", "queue": "Time a request waited in the queue",
        "compute_input": "Batch assembly per request", "compute_infer": "Model execution per request",
        "compute_output": "Output split per request"}


class RecorderCollector(Collector):
    """Every recorder's series, built at scrape time (`recorders` is the live dict the Metrics object owns)."""

    def __init__(self, recorders: Mapping[tuple[str, str], ModelRecorder]) -> None:
        self._recorders = recorders

    def describe(self) -> Iterator[Metric]:
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        return self._families({key: rec.snapshot() for key, rec in list(self._recorders.items())})

    @staticmethod
    def _families(snapshots: Mapping[tuple[str, str], dict]) -> Iterator[Metric]:
        labels = ["model", "version"]
        success = CounterMetricFamily("twofour_request_success", "Successful inference requests", labels=labels)
        failure = CounterMetricFamily("twofour_request_failure", "Failed inference requests",
                                      labels=[*labels, "reason"])
        inferences = CounterMetricFamily("twofour_inference", "Inferences (rows) computed", labels=labels)
        executions = CounterMetricFamily("twofour_execution", "Model executions (batches) run", labels=labels)
        pending = GaugeMetricFamily("twofour_pending_requests", "Requests queued or running", labels=labels)
        durations = {stage: HistogramMetricFamily(f"twofour_{stage}_duration_seconds", DOCS[stage], labels=labels)
                     for stage in STAGES}
        batch = HistogramMetricFamily("twofour_batch_size", "Rows in each executed batch", labels=labels)
        # The padding fraction of executed batches is padding / tokens (models that pad only; others export 0).
        tokens = CounterMetricFamily("twofour_batch_tokens", "Tokens (rows x padded length) in executed batches "
                                     "of models that pad to the longest", labels=labels)
        padding = CounterMetricFamily("twofour_batch_padding_tokens", "Padding tokens in executed batches of "
                                      "models that pad to the longest", labels=labels)
        for (model, version), snap in snapshots.items():
            lv = [model, version]
            success.add_metric(lv, snap["success"])
            for reason, count in sorted(snap["failures"].items()):
                failure.add_metric([*lv, reason], count)
            # The ratio inference/execution is the mean executed batch size: whether 2:4 kernels get batches
            # big enough to pay.
            inferences.add_metric(lv, snap["inferences"])
            executions.add_metric(lv, snap["executions"])
            pending.add_metric(lv, snap["pending"])
            for stage, family in durations.items():
                buckets, total = snap[stage]
                family.add_metric(lv, buckets, total)
            buckets, total = snap["batch"]
            batch.add_metric(lv, buckets, total)
            batch_tokens, padding_tokens = snap["tokens"]
            tokens.add_metric(lv, batch_tokens)
            padding.add_metric(lv, padding_tokens)
        yield from (success, failure, *durations.values(), batch, pending, inferences, executions, tokens, padding)
