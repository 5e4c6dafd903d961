"""Transport-independent request validation and lifecycle, on a real registry over a real test repository."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from server.app import App, build_app
from server.errors import ErrorKind, ServingError
from server.settings import Settings
from server.types import InferRequest, InferTensor, RequestedOutput
from tests.support.models import build_test_repository


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("repo")
    return root, build_test_repository(root)


@pytest.fixture()
def app(repo: tuple[Path, dict[str, torch.nn.Module]]) -> Iterator[App]:
    application = build_app(Settings(model_repository=repo[0], device="cpu", max_request_elements=10_000))
    asyncio.run(application.registry.load("mlp"))
    application.dataplane.starting = False
    yield application


def infer(app: App, *tensors: InferTensor, model: str = "mlp", version: str = "",
          outputs: list[RequestedOutput] | None = None, parameters: dict | None = None):  # type: ignore[no-untyped-def]
    request = InferRequest(model, version, list(tensors), outputs or [], "id-1", parameters or {})
    return asyncio.run(app.dataplane.infer(request))


def x(rows: int = 2, cols: int = 16, datatype: str = "FP32", name: str = "INPUT0") -> InferTensor:
    data = np.random.rand(rows, cols).astype(np.float32)
    return InferTensor(name, datatype, (rows, cols), data)


def test_outputs_match_the_model(app: App, repo: tuple[Path, dict[str, torch.nn.Module]]) -> None:
    tensor = x(3)
    response = infer(app, tensor)
    expected = repo[1]["mlp"](torch.from_numpy(tensor.data)).detach().numpy()
    assert response.id == "id-1" and response.model_version == "1"
    np.testing.assert_array_equal(response.outputs[0].data, expected)


@pytest.mark.parametrize(
    ("tensors", "kwargs", "kind", "words"),
    [
        ([x(name="NOPE")], {}, ErrorKind.INVALID_ARGUMENT, ["unexpected input 'NOPE'"]),
        ([x(datatype="FP16")], {}, ErrorKind.INVALID_ARGUMENT, ["datatype FP16", "FP32"]),
        ([x(cols=15)], {}, ErrorKind.INVALID_ARGUMENT, ["shape [2, 15]", "[-1, 16]"]),
        ([x(rows=9)], {}, ErrorKind.INVALID_ARGUMENT, ["batch size 9", "1..8"]),
        ([x(), x()], {}, ErrorKind.INVALID_ARGUMENT, ["more than once"]),
        ([], {}, ErrorKind.INVALID_ARGUMENT, ["requires inputs ['INPUT0']"]),
        ([x()], {"model": "ghost"}, ErrorKind.NOT_FOUND, ["unknown model: 'ghost'"]),
        ([x()], {"version": "7"}, ErrorKind.NOT_FOUND, ["no loaded version 7"]),
        ([x()], {"version": "x"}, ErrorKind.INVALID_ARGUMENT, ["positive integer"]),
        ([x()], {"outputs": [RequestedOutput("NOPE")]}, ErrorKind.INVALID_ARGUMENT, ["unknown output 'NOPE'"]),
        ([x()], {"parameters": {"priority": -1}}, ErrorKind.INVALID_ARGUMENT, ["'priority'"]),
    ],
)
def test_bad_requests_are_named(app: App, tensors: list[InferTensor], kwargs: dict, kind: ErrorKind,
                                words: list[str]) -> None:
    with pytest.raises(ServingError) as info:
        infer(app, *tensors, **kwargs)
    assert info.value.kind == kind
    for word in words:
        assert word in info.value.message
    infer(app, x())  # and a valid request still works


def test_element_limit(app: App) -> None:
    app.settings.max_request_elements = 20
    with pytest.raises(ServingError) as info:
        infer(app, x(2))
    assert info.value.kind == ErrorKind.TOO_LARGE


def test_model_that_is_not_loaded_is_unavailable(app: App) -> None:
    asyncio.run(app.registry.load("broken"))
    with pytest.raises(ServingError) as info:
        infer(app, x(), model="broken")
    assert info.value.kind == ErrorKind.UNAVAILABLE and "max_batch_size" in info.value.message


def test_shutdown_refuses_new_work_and_drains(app: App) -> None:
    app.dataplane.begin_shutdown()
    assert not app.dataplane.ready()
    with pytest.raises(ServingError) as info:
        infer(app, x())
    assert info.value.kind == ErrorKind.UNAVAILABLE and "shutting down" in info.value.message
    assert asyncio.run(app.dataplane.drain(0.1))


def test_statistics_count_requests(app: App) -> None:
    for _ in range(3):
        infer(app, x(2))
    (_, version, stats), = app.dataplane.statistics("mlp")
    assert version == "1"
    assert stats.success.count == 3 and stats.inference_count == 6 and stats.execution_count == 3
    assert stats.compute_infer.ns > 0


def test_metadata_has_batch_dimension(app: App) -> None:
    meta = app.dataplane.model_metadata("mlp")
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["versions"] == ["1"]


def test_strict_readiness_waits_for_every_model_it_was_asked_to_load(
        repo: tuple[Path, dict[str, torch.nn.Module]]) -> None:
    async def scenario() -> None:
        app = build_app(Settings(model_repository=repo[0], device="cpu", strict_readiness=True))
        await app.registry.load("mlp")
        await app.registry.load("broken")
        app.dataplane.starting = False
        assert not app.dataplane.ready()  # "broken" is UNAVAILABLE and still wanted
        await app.registry.unload("broken")
        assert app.dataplane.ready()  # explicitly unloaded: no longer waited for
        await app.registry.unload("mlp")
        assert app.dataplane.ready()
        await app.registry.load("broken")  # asked for again: wanted again, and still broken
        assert not app.dataplane.ready()
        lenient = build_app(Settings(model_repository=repo[0], device="cpu"))
        await lenient.registry.load("broken")
        lenient.dataplane.starting = False
        assert lenient.dataplane.ready()  # the default: one broken model does not take the replica out
        await app.registry.close()
        await lenient.registry.close()

    asyncio.run(scenario())
