"""model_warmup through a real server: it runs in the load path, before READY; load time includes it; it is not
counted in the model's statistics (as in Triton); a failing warmup leaves the model UNAVAILABLE saying why."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.models import EMBED_CONFIG, SLOW_CONFIG, Embed, Slow, write_model
from tests.support.server import ServerProcess, running_server

COUNT, ROWS = 4, 64
WARMUP = f"""
model_warmup {{ name: "full" batch_size: {ROWS} count: {COUNT}
  inputs {{ key: "INPUT0" value {{ data_type: TYPE_FP32 dims: [1024] random_data: true }} }} }}
"""
# index 99 of a 10-row table: the model itself fails on this sample (IndexError), as real models do
BAD_INDEX = """
model_warmup { name: "out_of_range" batch_size: 1
  inputs { key: "INDEX" value { data_type: TYPE_INT64 dims: [3] input_data_file: "index.raw" } } }
"""
MISSING_FILE = BAD_INDEX.replace("index.raw", "absent.raw")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("warmup_repo")
    slow = Slow()
    example = (torch.randn(2, 1024),)
    write_model(root, "cold", slow, example, SLOW_CONFIG.replace('"slow"', '"cold"'))
    write_model(root, "warm", slow, example, SLOW_CONFIG.replace('"slow"', '"warm"') + WARMUP)
    embed = Embed()
    for name, warmup in (("bad_index", BAD_INDEX), ("missing_file", MISSING_FILE)):
        write_model(root, name, embed, (torch.zeros(2, 3, dtype=torch.int64),),
                    EMBED_CONFIG.replace('"embed"', f'"{name}"') + warmup)
        (root / name / "warmup").mkdir()
        (root / name / "warmup" / "index.raw").write_bytes(np.array([1, 99, 2], dtype="<i8").tobytes())
    with running_server(root, timeout=180.0) as process:
        yield process


def metric(server: ServerProcess, name: str, model: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == name and s.labels.get("model") == model)


def test_a_failing_warmup_fails_the_load_with_its_reason(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        index = {row["name"]: row for row in client.get_model_repository_index()}
        assert index["warm"]["state"] == "READY" and client.is_model_ready("warm")
        for name in ("bad_index", "missing_file"):
            assert index[name]["state"] == "UNAVAILABLE" and not client.is_model_ready(name)
        assert "model_warmup 'out_of_range' failed: IndexError" in index["bad_index"]["reason"]
        assert "input_data_file warmup/absent.raw does not exist" in index["missing_file"]["reason"]
    finally:
        client.close()


def test_warmup_is_in_the_load_time_and_not_in_the_statistics(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics("warm")["model_stats"][0]
        assert int(stats.get("inference_count", 0)) == 0 and int(stats.get("execution_count", 0)) == 0
        # one request of the warmup's shape: how long one of its executions takes on this machine now
        tensor = httpclient.InferInput("INPUT0", [ROWS, 1024], "FP32")
        tensor.set_data_from_numpy(np.random.rand(ROWS, 1024).astype(np.float32))
        client.infer("warm", [tensor])
        stats = client.get_inference_statistics("warm")["model_stats"][0]
        assert int(stats["inference_count"]) == ROWS and int(stats["execution_count"]) == 1
        one_execution_s = int(stats["inference_stats"]["compute_infer"]["ns"]) / 1e9
    finally:
        client.close()
    warm = metric(server, "twofour_model_load_duration_seconds", "warm")
    cold = metric(server, "twofour_model_load_duration_seconds", "cold")
    # the warm load ran COUNT executions like the one just timed; asking for one of the four leaves room for a
    # machine whose speed changes between load and now
    assert warm - cold > one_execution_s, (warm, cold, one_execution_s)
