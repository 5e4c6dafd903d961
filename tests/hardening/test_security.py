"""Security through a real server: names cannot escape the repository, symlinks out of it and pickles are refused
with clear reasons, repository control is gated, and no message sent to a client carries a filesystem path.

(The container running as non-root is checked against the Dockerfile in tests/deploy/test_dockerfile.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from server.errors import ErrorKind, as_serving_error, redact_paths
from server.metrics import Metrics
from server.registry import Registry
from tests.hardening.wire import Http, error_text
from tests.support.models import build_test_repository
from tests.support.server import ServerProcess

TOKEN = "sec-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "TOP-SECRET-CONTENT"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A repository with one good model and every kind of hostile entry; returns (root, outside dir)."""
    base = tmp_path_factory.mktemp("security")
    root, outside = base / "repo", base / "outside"
    build_test_repository(root)
    shutil.rmtree(root / "broken")
    build_test_repository(outside)
    (outside / "secret.txt").write_text(f'name: "{SECRET}"\n')
    os.symlink(outside / "mlp", root / "escape")  # a model directory that is a link out of the repository
    shutil.copytree(root / "mlp", root / "verlink")
    shutil.rmtree(root / "verlink" / "1")
    os.symlink(outside / "mlp" / "1", root / "verlink" / "1")  # a version directory linked outside
    shutil.copytree(root / "mlp", root / "weightlink")
    (root / "weightlink" / "1" / "weights.safetensors").unlink()
    os.symlink(outside / "mlp" / "1" / "weights.safetensors", root / "weightlink" / "1" / "weights.safetensors")
    shutil.copytree(root / "mlp", root / "cfglink")
    (root / "cfglink" / "config.pbtxt").unlink()
    os.symlink(outside / "secret.txt", root / "cfglink" / "config.pbtxt")  # parse errors would quote the file
    shutil.copytree(root / "mlp", root / "pickled")
    (root / "pickled" / "1" / "model.PT").write_bytes(b"\x80\x04K\x01.")  # a (harmless) pickle
    for name in ("verlink", "weightlink", "pickled"):
        text = (root / name / "config.pbtxt").read_text().replace('"mlp"', f'"{name}"')
        (root / name / "config.pbtxt").write_text(text)
    return root, outside


@pytest.fixture(scope="module")
def server(repo: tuple[Path, Path]) -> Iterator[ServerProcess]:
    process = ServerProcess(repo[0], "--model-control-mode", "explicit", "--load-model", "mlp",
                            "--repository-token", TOKEN)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def no_path(message: str, repo: tuple[Path, Path]) -> None:
    for path in (*repo, repo[0].resolve(), repo[1].resolve()):
        assert str(path) not in message, f"path leaked: {message}"
    assert SECRET not in message, f"outside file content leaked: {message}"


TRAVERSALS = ["..", "../mlp", "%2e%2e", "%2e%2e%2fetc", "%2Fetc%2Fpasswd", "mlp%2f..%2f..", ".hidden", "a%00b",
              "..%5c..%5cwindows", "%252e%252e"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_http_load_and_unload_refuse_escaping_names(server, repo, name: str) -> None:  # type: ignore[no-untyped-def]
    http = Http(server)
    for action in ("load", "unload"):
        status, payload = http.request("POST", f"/v2/repository/models/{name}/{action}", b"", AUTH)
        assert status in (400, 404), (name, action, status, payload)
        no_path(error_text(status, payload, repo[0]), repo)
    http.close()


@pytest.mark.parametrize("name", ["..", "../mlp", "/etc", "/etc/passwd", "mlp/../../x", "", "a\x00b", "." * 3,
                                  "x" * 300, "..\\..\\x"])
def test_grpc_load_and_unload_refuse_escaping_names(server, repo, name: str) -> None:  # type: ignore[no-untyped-def]
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    for call, request in ((stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=name)),
                          (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=name))):
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=metadata, timeout=10)
        assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), info.value
        no_path(info.value.details(), repo)


@pytest.mark.parametrize("name, reason", [
    ("escape", "outside the model repository"),
    ("verlink", "outside the model repository"),
    ("weightlink", "outside the model repository"),
    ("cfglink", "outside the model repository"),
    ("pickled", "pickle files are never loaded"),
])
def test_hostile_model_directories_are_refused_with_a_clear_reason(server, repo, name: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    http = Http(server)
    status, payload = http.request("POST", f"/v2/repository/models/{name}/load", b"", AUTH)
    assert status == 400, (status, payload)
    message = error_text(status, payload, repo[0])
    assert reason in message, message
    no_path(message, repo)
    status, payload = http.request("POST", "/v2/repository/index", b"", AUTH)
    rows = {row["name"]: row for row in json.loads(payload)}
    assert rows.get(name, {"state": "UNAVAILABLE"})["state"] == "UNAVAILABLE"
    for row in rows.values():
        no_path(row["reason"], repo)
    http.close()
    assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready("mlp")


def test_repository_control_needs_the_token_on_both_transports(server, repo) -> None:  # type: ignore[no-untyped-def]
    http = Http(server)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        status, payload = http.request("POST", "/v2/repository/models/mixed/load", b"", headers)
        assert status == 401, (headers, status)
        assert "bearer token" in error_text(status, payload, repo[0]) and TOKEN.encode() not in payload
    http.close()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(grpcclient.InferenceServerException) as info:
        client.load_model("mixed", headers={"authorization": "Bearer nope"})
    assert info.value.status() == "StatusCode.UNAUTHENTICATED" and "bearer token" in info.value.message()
    assert TOKEN not in info.value.message()  # the server's secret is never echoed
    assert not client.is_model_ready("mixed")


def test_repository_control_can_be_switched_off(repo) -> None:  # type: ignore[no-untyped-def]
    process = ServerProcess(repo[0], "--model-control-mode", "explicit", "--load-model", "mlp",
                            "--no-allow-repository-control")
    try:
        http = Http(process)
        for path in ("/v2/repository/models/mixed/load", "/v2/repository/models/mlp/unload",
                     "/v2/repository/index"):
            status, payload = http.request("POST", path, b"", AUTH)
            assert status == 403 and "disabled" in error_text(status, payload, repo[0])
        http.close()
        client = grpcclient.InferenceServerClient(process.grpc_url)
        for call in (lambda: client.unload_model("mlp"), lambda: client.load_model("mixed"),
                     client.get_model_repository_index):
            with pytest.raises(grpcclient.InferenceServerException) as info:
                call()
            assert info.value.status() == "StatusCode.PERMISSION_DENIED" and "disabled" in info.value.message()
        assert client.is_model_ready("mlp") and not client.is_model_ready("mixed")
    finally:
        assert process.stop() == 0


# -- the redaction itself (exception text from torch/OS carries absolute paths) --------------------------------
def test_internal_errors_never_carry_absolute_paths() -> None:
    error = as_serving_error(FileNotFoundError(2, "No such file or directory", "/srv/models/m/1/program.pt2"))
    assert error.kind == ErrorKind.INTERNAL
    assert "/srv/models" not in error.message and "program.pt2" in error.message
    assert redact_paths("file path: /a/b/c.bin, then /x/y") == "file path: .../c.bin, then .../y"
    assert redact_paths("model 'mlp/../x' shape [1, 2] url http://h/a/b") == "model 'mlp/../x' shape [1, 2] url http://h/a/b"


def test_load_failure_reasons_name_no_paths(tmp_path: Path) -> None:
    """A runtime that fails with the OS's own message (full path) is reported without it."""
    build_test_repository(tmp_path)

    def failing_runtime(version_dir: Path, config: object) -> object:
        raise PermissionError(13, "Permission denied", str(version_dir / "weights.safetensors"))

    registry = Registry(tmp_path, Metrics(), failing_runtime)  # type: ignore[arg-type]
    entry = asyncio.run(registry.load("mlp"))
    assert entry.state == "UNAVAILABLE" and "Permission denied" in entry.reason
    assert "<repository>/mlp/1/weights.safetensors" in entry.reason and str(tmp_path) not in entry.reason, \
        entry.reason
