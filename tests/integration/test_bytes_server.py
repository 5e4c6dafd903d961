"""BYTES end to end on a real server, with unmodified tritonclient (HTTP binary, HTTP JSON, gRPC), under each front:
the default (native: gRPC and HTTP in the C++ front), the Python gRPC front (uvicorn HTTP) and inline gRPC.

Covers Triton's classification extension (BYTES outputs `score:index:label` from a real model's logits) and BYTES
inputs to a model whose config declares a TYPE_STRING input (`caption`) but has no tokenizer: clear 400 /
INVALID_ARGUMENT, and the server goes on serving. Bad framing, a 10 MB string, 100,000 rows and crossed datatypes
are refused by name on both ports.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from server.transport.grpc_front_command import native_binary
from tests.support.models import CLASSIFIER_LABELS, build_bytes_repository
from tests.support.numerics import SMALL_MLP
from tests.support.server import ServerProcess

LIMIT = 8 * 1024 * 1024  # --max-request-bytes: a 10 MB string is over it
FRONTS = ["native", "python", "inline"]
RNG = np.random.default_rng(11)
X = RNG.normal(size=(3, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("bytes_repo")
    return root, build_bytes_repository(root)


@pytest.fixture(scope="module", params=FRONTS)
def server(request: pytest.FixtureRequest, repo: tuple[Path, dict[str, torch.nn.Module]]) -> Iterator[ServerProcess]:
    if request.param == "native" and native_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test the native front, but its binary is missing (make native)")
        pytest.skip("no native front binary: build it with `make native`")
    front = {"native": "auto", "python": "python", "inline": "inline"}[request.param]
    process = ServerProcess(repo[0], "--max-request-bytes", str(LIMIT), env={"TWOFOUR_GRPC_FRONTEND": front})
    try:
        yield process
    finally:
        process.stop()


def served_logits(server: ServerProcess) -> np.ndarray:
    with httpclient.InferenceServerClient(server.http_url) as client:
        tensor = httpclient.InferInput("INPUT0", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        return client.infer("classifier", [tensor]).as_numpy("OUTPUT0")


def check_classes(got: np.ndarray, logits: np.ndarray, k: int) -> None:
    """Each row: the k largest logits, highest first, as `%f:index:label` of exactly those float32 values."""
    assert got.shape == (len(logits), k)
    for row, entries in zip(logits, got.tolist(), strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        for index, entry in zip(order, entries, strict=True):
            text = entry.decode() if isinstance(entry, bytes) else entry
            score, position, label = text.split(":", 2)  # labels may hold ':'
            assert re.fullmatch(r"-?\d+\.\d{6}", score), text  # std::to_string: printf %f
            assert float(score) == pytest.approx(float(row[index]), abs=5e-7)
            assert int(position) == index and label == CLASSIFIER_LABELS[index]


def test_classification_over_http_binary_and_json(server: ServerProcess,
                                                  repo: tuple[Path, dict[str, torch.nn.Module]]) -> None:
    logits = served_logits(server)
    with torch.inference_mode():
        expected = repo[1]["classifier"](torch.from_numpy(X)).numpy()
    SMALL_MLP.assert_close(logits, expected)  # fp32 GEMMs, summation order may differ (numerics.py)
    with httpclient.InferenceServerClient(server.http_url) as client:
        tensor = httpclient.InferInput("INPUT0", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        for binary in (True, False):
            out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=3)
            result = client.infer("classifier", [tensor], outputs=[out])
            assert result.get_output("OUTPUT0")["datatype"] == "BYTES"
            got = result.as_numpy("OUTPUT0")
            assert all(isinstance(e, bytes if binary else str) for e in got.reshape(-1))
            check_classes(got, logits, 3)
        over = client.infer("classifier", [tensor],
                            outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=10)])
        check_classes(over.as_numpy("OUTPUT0"), logits, 4)  # capped at the 4 classes a row has
        assert "classification" in client.get_server_metadata()["extensions"]


def test_classification_over_grpc(server: ServerProcess) -> None:
    logits = served_logits(server)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        tensor = grpcclient.InferInput("INPUT0", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer("classifier", [tensor], outputs=[grpcclient.InferRequestedOutput("OUTPUT0",
                                                                                               class_count=2)])
        assert result.get_output("OUTPUT0").datatype == "BYTES"
        check_classes(result.as_numpy("OUTPUT0"), logits, 2)
        assert "classification" in client.get_server_metadata().extensions


def http_text(values: np.ndarray, binary: bool) -> list[httpclient.InferInput]:
    x = httpclient.InferInput("INPUT0", [len(values), 16], "FP32")
    x.set_data_from_numpy(X[:1].repeat(len(values), 0))
    text = httpclient.InferInput("caption", list(values.shape), "BYTES")
    text.set_data_from_numpy(values, binary_data=binary)
    return [x, text]


def grpc_text(values: np.ndarray) -> list[grpcclient.InferInput]:
    x = grpcclient.InferInput("INPUT0", [len(values), 16], "FP32")
    x.set_data_from_numpy(X[:1].repeat(len(values), 0))
    text = grpcclient.InferInput("caption", list(values.shape), "BYTES")
    text.set_data_from_numpy(values)
    return [x, text]


SENTENCES = np.array([["a sentence"], [""], ["d\u00f6ner \u2603"]], dtype=object)
NO_TOKENIZER = "model 'texty' has no tokenizer"


def test_text_to_a_model_without_tokenizer_is_refused_on_every_path(server: ServerProcess,
                                                                   repo: tuple[Path, dict[str, torch.nn.Module]]
                                                                   ) -> None:
    with httpclient.InferenceServerClient(server.http_url) as client:
        for binary in (True, False):
            with pytest.raises(InferenceServerException) as info:
                client.infer("texty", http_text(SENTENCES, binary))
            assert info.value.status() == "400" and NO_TOKENIZER in info.value.message() and "'caption'" in \
                info.value.message()
        x = httpclient.InferInput("INPUT0", [3, 16], "FP32")
        x.set_data_from_numpy(X)
        served = client.infer("texty", [x]).as_numpy("OUTPUT0")  # its tensor input still works
        text = httpclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(SENTENCES[:1])
        with pytest.raises(InferenceServerException) as info:  # a model with no `text` input at all
            client.infer("classifier", [x, text])
        assert info.value.status() == "400" and "'text'" in info.value.message()
    with torch.inference_mode():
        SMALL_MLP.assert_close(served, repo[1]["texty"](torch.from_numpy(X)).numpy())
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer("texty", grpc_text(SENTENCES))
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and NO_TOKENIZER in info.value.message()
        text = client.get_model_metadata("texty").inputs[1]
        assert (text.name, text.datatype, list(text.shape)) == ("caption", "BYTES", [-1, 1])


def post(server: ServerProcess, body: bytes, header_length: int | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection(server.http_url, timeout=60)
    headers = {} if header_length is None else {"Inference-Header-Content-Length": str(header_length)}
    try:
        connection.request("POST", "/v2/models/texty/infer", body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload)["error"] if response.status != 200 else ""
    finally:
        connection.close()


def binary_text(framed: bytes, count: int) -> tuple[bytes, int]:
    header = json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [count, 16], "data": [0.0] * (16 * count)},
        {"name": "caption", "datatype": "BYTES", "shape": [count, 1], "parameters": {"binary_data_size": len(framed)}},
    ]}).encode()
    return header + framed, len(header)


BAD_FRAMING = [
    (b"\x09\0\0\0abc", 1, "claims 9 bytes at byte 4, which runs past the end"),
    (b"\x01\0\0\0a\x01\0", 2, "need at least 8 bytes"),
    (b"\x01\0\0\0a\x01\0\0\0b\x01\0", 3, "element 2: its 4-byte length prefix is truncated"),
    (b"\x01\0\0\0abc", 1, "2 bytes follow the last of its 1 BYTES elements"),
]


def test_bad_bytes_are_named_on_both_ports_and_the_server_keeps_serving(server: ServerProcess) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))
    for framed, count, words in BAD_FRAMING:
        status, error = post(server, *binary_text(framed, count))
        assert status == 400 and words in error and "'caption'" in error, error
        message = pb.ModelInferRequest(model_name="texty", raw_input_contents=[X[:1].repeat(count, 0).tobytes(),
                                                                               framed])
        message.inputs.add(name="INPUT0", datatype="FP32", shape=[count, 16])
        message.inputs.add(name="caption", datatype="BYTES", shape=[count, 1])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(message)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details()
    crossed = [
        ({"name": "caption", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}, "datatype FP32 does not match the "
         "model's BYTES"),
        ({"name": "INPUT0", "datatype": "BYTES", "shape": [1, 16], "data": ["x"] * 16}, "datatype BYTES does not "
         "match the model's FP32"),
        ({"name": "caption", "datatype": "BYTES", "shape": [1, 1], "data": [3]}, "must be JSON strings"),
    ]
    for tensor, words in crossed:
        status, error = post(server, json.dumps({"inputs": [tensor]}).encode())
        assert status == 400 and words in error, error
    # JSON text is UTF-8: a string holding invalid UTF-8 (or a lone surrogate escape) makes the document invalid
    for string in (b"\xff\xfe", b"\\ud800"):
        status, error = post(server, b'{"inputs": [{"name": "caption", "datatype": "BYTES", "shape": [1, 1], '
                                     b'"data": ["' + string + b'"]}]}')
        assert status == 400 and "not valid JSON" in error, error
    assert served_logits(server).shape == (3, 4)  # everyone else is still served


def test_huge_strings_and_row_counts(server: ServerProcess) -> None:
    big = np.array([["x" * (10 * 1024 * 1024)]], dtype=object)
    with httpclient.InferenceServerClient(server.http_url, network_timeout=120) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer("texty", http_text(big, True))
        assert info.value.status() == "413", info.value.message()
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer("texty", grpc_text(big))
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED", info.value.message()
        rows = np.array([["a row"]] * 100_000, dtype=object)
        text = grpcclient.InferInput("caption", [100_000, 1], "BYTES")
        text.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException) as info:
            client.infer("texty", [text])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "batch size 100000 is outside 1..8" in \
            info.value.message()
    framed = b"".join(struct.pack("<I", 5) + b"a row" for _ in range(100_000))
    header = json.dumps({"inputs": [{"name": "caption", "datatype": "BYTES", "shape": [100_000, 1],
                                     "parameters": {"binary_data_size": len(framed)}}]}).encode()
    status, error = post(server, header + framed, len(header))
    assert status == 400 and "batch size 100000 is outside 1..8" in error, error
    status, error = post(server, json.dumps({"inputs": [{"name": "caption", "datatype": "BYTES", "shape": [1, 1],
                                                         "data": [""]}]}).encode())
    assert status == 400 and "requires inputs ['INPUT0']" in error, error  # the empty string itself decodes
    assert served_logits(server).shape == (3, 4)
