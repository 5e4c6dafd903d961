"""Metrics: Prometheus names and units, ModelStatistics fed by the same calls, GPU collector's CPU path, listener."""

from __future__ import annotations

import urllib.request

import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import GpuMemoryCollector, Metrics
from server.metrics_http import start_metrics_listener


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


MV = {"model": "m", "version": "1"}


def test_series_follow_prometheus_conventions() -> None:
    metrics = Metrics(gpu=False)
    rec = metrics.recorder("m", "1")
    rec.request_done(True, 2_000_000)
    rec.request_done(False, 1_000, "unavailable")
    rec.request_computed(100_000, 10_000, 1_000_000, 20_000)
    rec.batch_executed(4, 10_000, 1_000_000, 20_000)
    names = {name for name, _ in samples(metrics)}
    for counter in ("twofour_request_success_total", "twofour_request_failure_total", "twofour_inference_total",
                    "twofour_execution_total", "process_cpu_seconds_total"):
        assert counter in names
    for hist in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        assert f"twofour_{hist}_duration_seconds_bucket" in names
    assert "twofour_batch_size_bucket" in names and "process_resident_memory_bytes" in names
    assert value(metrics, "twofour_request_duration_seconds_sum", **MV) == pytest.approx(0.002)
    buckets = {dict(k[1]).get("le") for k in samples(metrics) if k[0] == "twofour_queue_duration_seconds_bucket"}
    assert "0.0001" in buckets and "10.0" in buckets


def test_each_observation_moves_prometheus_and_statistics_together() -> None:
    metrics = Metrics(gpu=False)
    rec = metrics.recorder("m", "1")
    rec.request_done(False, 5_000, "invalid_argument")
    rec.request_done(False, 5_000, "invalid_argument")
    rec.request_done(True, 3_000_000)
    for _ in range(3):
        rec.request_computed(250_000, 1_000, 2_000_000, 3_000)
    rec.batch_executed(3, 1_000, 2_000_000, 3_000)
    stats = metrics.stats("m", "1")
    assert stats is not None
    assert value(metrics, "twofour_request_failure_total", reason="invalid_argument", **MV) == stats.fail.count == 2
    assert value(metrics, "twofour_request_success_total", **MV) == stats.success.count == 1
    assert value(metrics, "twofour_queue_duration_seconds_count", **MV) == stats.queue.count == 3
    assert value(metrics, "twofour_queue_duration_seconds_sum", **MV) == pytest.approx(stats.queue.ns / 1e9)
    assert value(metrics, "twofour_compute_infer_duration_seconds_sum", **MV) == \
        pytest.approx(stats.compute_infer.ns / 1e9)
    assert value(metrics, "twofour_inference_total", **MV) == stats.inference_count == 3
    assert value(metrics, "twofour_execution_total", **MV) == stats.execution_count == 1
    assert value(metrics, "twofour_batch_size_bucket", le="2.0", **MV) == 0
    assert value(metrics, "twofour_batch_size_bucket", le="4.0", **MV) == 1
    assert sorted(stats.batch) == [3]


def test_padding_counters_give_the_padding_fraction_of_executed_batches() -> None:
    metrics = Metrics(gpu=False)
    rec = metrics.recorder("m", "1")
    assert value(metrics, "twofour_batch_tokens_total", **MV) == 0  # exported (0) before any padded batch
    rec.tokens_executed(6, 25)
    rec.tokens_executed(0, 15)
    stats = metrics.stats("m", "1")
    assert stats is not None and (stats.padding_tokens, stats.batch_tokens) == (6, 40)
    assert value(metrics, "twofour_batch_padding_tokens_total", **MV) == 6
    assert value(metrics, "twofour_batch_tokens_total", **MV) == 40


def test_weights_load_time_and_pending() -> None:
    metrics = Metrics(gpu=False)
    rec = metrics.recorder("m", "1")
    metrics.weights("m", "1", {"dense": 1000, "sparse_2_4": 600}, 2200, 0.5)
    rec.pending.inc()
    assert value(metrics, "twofour_weight_bytes", kind="sparse_2_4", **MV) == 600
    assert value(metrics, "twofour_weight_dense_equivalent_bytes", **MV) == 2200
    assert value(metrics, "twofour_model_load_duration_seconds", **MV) == 0.5
    assert value(metrics, "twofour_pending_requests", **MV) == 1


def test_gpu_collector_without_cuda_exports_no_samples() -> None:
    families = list(GpuMemoryCollector(device_count=0).collect())
    assert [f.name for f in families] == ["twofour_gpu_memory_used_bytes", "twofour_gpu_memory_total_bytes"]
    assert all(f.samples == [] for f in families)
    if not torch.cuda.is_available():
        assert GpuMemoryCollector().device_count == 0
        assert not any(name.startswith("twofour_gpu") for name, _ in samples(Metrics()))


def test_gpu_collector_never_touches_an_uninitialised_cuda() -> None:
    if torch.cuda.is_initialized():
        pytest.skip("CUDA already initialised in this process")
    families = list(GpuMemoryCollector(device_count=2).collect())
    assert all(f.samples == [] for f in families)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_collector_reports_every_device() -> None:
    torch.cuda.init()
    families = {f.name: f for f in GpuMemoryCollector().collect()}
    total = families["twofour_gpu_memory_total_bytes"].samples
    assert len(total) == torch.cuda.device_count() and all(s.value > 0 for s in total)


def test_listener_serves_the_registry_and_closes() -> None:
    metrics = Metrics(gpu=False)
    metrics.recorder("m", "1").request_done(True, 1_000)
    listener = start_metrics_listener(metrics, "127.0.0.1", 0)
    try:
        assert listener.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{listener.port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert 'twofour_request_success_total{model="m",version="1"} 1.0' in body
    finally:
        listener.close()
        listener.close()
