"""The error-table rows that the per-transport suites cover on only one side, through a real server subprocess and
the unmodified tritonclient on both transports: INTERNAL (a real runtime failure: an embedding index past the
table), UNIMPLEMENTED (shared memory, trace and logging extensions, shared-memory inputs). Each answer carries the
table's status and a message naming the cause, no filesystem path, and a valid request still succeeds after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.models import EMBED_CONFIG, MLP_CONFIG, Embed, SmallMLP, write_model
from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess, running_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("error_table")
    mlp, embed = SmallMLP(seed=8), Embed()
    write_model(root, "mlp", mlp, (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=""),
                sparse={"hidden.weight"})
    write_model(root, "embed", embed, (torch.zeros(2, 3, dtype=torch.int64),), EMBED_CONFIG)
    with running_server(root) as process:
        yield process, root, {"mlp": mlp, "embed": embed}


def failure(call: Callable[[], Any]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def no_path(message: str, root: Path) -> None:
    assert str(root) not in message and str(root.resolve()) not in message, f"path leaked: {message}"


def still_serves(server: ServerProcess, mlp: torch.nn.Module) -> None:
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    with torch.inference_mode():
        want = mlp(torch.from_numpy(x)).numpy()
    h = httpclient.InferenceServerClient(server.http_url)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = httpclient.InferInput("INPUT0", [2, 16], "FP32").set_data_from_numpy(x)
        SMALL_MLP.assert_close(h.infer("mlp", [tensor]).as_numpy("OUTPUT0"), want)
        tensor = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
        tensor.set_data_from_numpy(x)
        SMALL_MLP.assert_close(g.infer("mlp", [tensor]).as_numpy("OUTPUT0"), want)
    finally:
        h.close()
        g.close()
    assert server.alive()


def _index(module: Any, indices: list[int], binary: bool = True) -> Any:
    tensor = module.InferInput("INDEX", [1, 3], "INT64")
    data = np.array([indices], dtype=np.int64)
    if module is httpclient:
        return tensor.set_data_from_numpy(data, binary_data=binary)
    tensor.set_data_from_numpy(data)
    return tensor


def test_internal_row_on_both_transports(served) -> None:  # type: ignore[no-untyped-def]
    server, root, modules = served
    h = httpclient.InferenceServerClient(server.http_url)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    stats_before = h.get_inference_statistics("embed")["model_stats"][0]["inference_stats"]
    for binary in (True, False):
        err = failure(lambda binary=binary: h.infer("embed", [_index(httpclient, [1, 99, 2], binary)]))
        assert err.status() == "500", (err.status(), err.message())
        assert "IndexError" in err.message() and "index out of range" in err.message(), err.message()
        no_path(err.message(), root)
    err = failure(lambda: g.infer("embed", [_index(grpcclient, [1, 99, 2])]))
    assert err.status() == "StatusCode.INTERNAL", (err.status(), err.message())
    assert "IndexError" in err.message() and "index out of range" in err.message(), err.message()
    no_path(err.message(), root)
    with torch.inference_mode():
        want = modules["embed"](torch.tensor([[1, 9, 2]])).numpy()
    for out in (h.infer("embed", [_index(httpclient, [1, 9, 2])]).as_numpy("VECTORS"),
                g.infer("embed", [_index(grpcclient, [1, 9, 2])]).as_numpy("VECTORS")):
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    stats_after = h.get_inference_statistics("embed")["model_stats"][0]["inference_stats"]
    assert stats_after["fail"]["count"] - stats_before["fail"]["count"] == 3
    assert stats_after["success"]["count"] - stats_before["success"]["count"] == 2
    assert "embed" in server.output() and "IndexError" in server.output(), "the failure must be logged"
    still_serves(server, modules["mlp"])


HTTP_EXTENSIONS: list[tuple[str, Callable[[httpclient.InferenceServerClient], Any], str]] = [
    ("system shm status", lambda c: c.get_system_shared_memory_status(), "system shared memory"),
    ("system shm region status", lambda c: c.get_system_shared_memory_status("r0"), "system shared memory"),
    ("system shm register", lambda c: c.register_system_shared_memory("r0", "/key", 64), "system shared memory"),
    ("system shm unregister", lambda c: c.unregister_system_shared_memory(), "system shared memory"),
    ("system shm unregister region", lambda c: c.unregister_system_shared_memory("r0"), "system shared memory"),
    ("cuda shm status", lambda c: c.get_cuda_shared_memory_status(), "CUDA shared memory"),
    ("cuda shm register", lambda c: c.register_cuda_shared_memory("r0", b"handle", 0, 64), "CUDA shared memory"),
    ("cuda shm unregister", lambda c: c.unregister_cuda_shared_memory("r0"), "CUDA shared memory"),
    ("trace get", lambda c: c.get_trace_settings(), "trace extension"),
    ("trace get model", lambda c: c.get_trace_settings("mlp"), "trace extension"),
    ("trace update", lambda c: c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}),
     "trace extension"),
    ("log get", lambda c: c.get_log_settings(), "logging extension"),
    ("log update", lambda c: c.update_log_settings({"log_info": True}), "logging extension"),
]


@pytest.mark.parametrize("case", HTTP_EXTENSIONS, ids=[c[0] for c in HTTP_EXTENSIONS])
def test_unimplemented_extensions_over_http_are_501(served, case) -> None:  # type: ignore[no-untyped-def]
    server, _, _ = served
    _, call, fragment = case
    client = httpclient.InferenceServerClient(server.http_url)
    err = failure(lambda: call(client))
    assert err.status() == "501", (err.status(), err.message())
    assert fragment in err.message() and "not supported" in err.message(), err.message()
    client.close()


def test_shared_memory_inputs_are_unimplemented_on_both_transports(served) -> None:  # type: ignore[no-untyped-def]
    server, _, modules = served
    h = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [2, 16], "FP32")
    tensor.set_shared_memory("region0", 128)
    err = failure(lambda: h.infer("mlp", [tensor]))
    assert err.status() == "501" and "shared memory" in err.message(), (err.status(), err.message())
    g = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
    tensor.set_shared_memory("region0", 128)
    err = failure(lambda: g.infer("mlp", [tensor]))
    assert err.status() == "StatusCode.UNIMPLEMENTED" and "shared memory" in err.message(), err.message()
    still_serves(server, modules["mlp"])
