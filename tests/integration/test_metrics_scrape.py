"""Every metric moves when it should: scrape /metrics before and after real requests to the real server.

The shared session server is used, so every check is a delta over what this test itself sent. Statistics
(`/v2/models/<m>/stats`) are compared with the same deltas: both are fed by the same measurements.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess) -> Samples:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def stats(server: ServerProcess, model: str) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/versions/1/stats", timeout=10) as r:
        return json.load(r)["model_stats"][0]


MLP = {"model": "mlp", "version": "1"}


def test_request_metrics_move_with_real_requests(server: ServerProcess, modules: dict[str, torch.nn.Module]) -> None:
    before, stats_before = scrape(server), stats(server, "mlp")
    x = np.random.default_rng(3).standard_normal((3, 16), dtype=np.float32)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    http_client = httpclient.InferenceServerClient(server.http_url)
    g_in = grpcclient.InferInput("INPUT0", [3, 16], "FP32")
    g_in.set_data_from_numpy(x)
    h_in = httpclient.InferInput("INPUT0", [3, 16], "FP32")
    h_in.set_data_from_numpy(x)
    expected = modules["mlp"](torch.from_numpy(x)).detach().numpy()
    for _ in range(2):
        SMALL_MLP.assert_close(grpc_client.infer("mlp", [g_in]).as_numpy("OUTPUT0"), expected)
    SMALL_MLP.assert_close(http_client.infer("mlp", [h_in]).as_numpy("OUTPUT0"), expected)
    bad = grpcclient.InferInput("INPUT0", [1, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 5), np.float32))
    with pytest.raises(InferenceServerException):
        grpc_client.infer("mlp", [bad])
    after, stats_after = scrape(server), stats(server, "mlp")

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    assert delta("twofour_request_success_total", **MLP) == 3
    assert delta("twofour_request_failure_total", reason="invalid_argument", **MLP) == 1
    assert delta("twofour_inference_total", **MLP) == 9  # 3 requests x 3 rows
    assert delta("twofour_execution_total", **MLP) == 3  # no dynamic batching: one execution each
    assert delta("twofour_batch_size_bucket", le="4.0", **MLP) - \
        delta("twofour_batch_size_bucket", le="2.0", **MLP) == 3
    for stage in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        assert delta(f"twofour_{stage}_duration_seconds_count", **MLP) == 3, stage
    assert delta("twofour_compute_infer_duration_seconds_sum", **MLP) > 0
    assert delta("twofour_request_duration_seconds_sum", **MLP) >= \
        delta("twofour_compute_infer_duration_seconds_sum", **MLP)
    assert get(after, "twofour_pending_requests", **MLP) == 0
    assert get(after, "process_cpu_seconds_total") > 0 and get(after, "process_resident_memory_bytes") > 0

    # /stats is fed by the same calls: its deltas are the metrics' deltas
    assert int(stats_after["inference_count"]) - int(stats_before["inference_count"]) == 9
    assert int(stats_after["execution_count"]) - int(stats_before["execution_count"]) == 3
    s_after, s_before = stats_after["inference_stats"], stats_before["inference_stats"]
    assert int(s_after["success"]["count"]) - int(s_before["success"]["count"]) == 3
    assert int(s_after["fail"]["count"]) - int(s_before["fail"]["count"]) == 1
    queue_ns = int(s_after["queue"]["ns"]) - int(s_before["queue"]["ns"])
    assert queue_ns / 1e9 == pytest.approx(delta("twofour_queue_duration_seconds_sum", **MLP), rel=1e-6, abs=1e-6)


def test_model_load_and_weight_bytes_are_exported(server: ServerProcess) -> None:
    samples = scrape(server)
    assert get(samples, "twofour_model_load_duration_seconds", **MLP) > 0
    dense = get(samples, "twofour_weight_bytes", kind="dense", **MLP)
    assert dense > 0
    # the CPU runtime keeps everything dense, so the dense-equivalent footprint is what it holds
    assert get(samples, "twofour_weight_dense_equivalent_bytes", **MLP) == dense + get(
        samples, "twofour_weight_bytes", kind="sparse_2_4", **MLP)
    if not torch.cuda.is_available():
        assert not any(name.startswith("twofour_gpu_memory") for name, _ in samples)  # no CUDA: no GPU series
