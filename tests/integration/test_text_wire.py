"""Text over every path: gRPC, HTTP binary, HTTP JSON (tritonclient BYTES, unmodified) and /v1/embeddings give
the embeddings that client-side tokens give over gRPC, cosine >= 0.9999 per row (same program, same ids; only
the batch layout can move fp32 sums, by ~1e-7)."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.server import ServerProcess
from tests.support.text_models import DATA, minilm_path

LINES = (DATA / "prose.txt").read_text(encoding="utf-8").splitlines()[:12] + [
    " ".join((DATA / "prose.txt").read_text(encoding="utf-8").splitlines()[20:60])]  # one over 256 tokens


@pytest.fixture(scope="module")
def server(text_server: ServerProcess) -> ServerProcess:
    return text_server


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def token_embeddings(server: ServerProcess) -> np.ndarray:
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)(
        LINES, padding=True, truncation=True, max_length=256, return_tensors="np")
    inputs = []
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        tensor = grpcclient.InferInput(name, list(encoded[name].shape), "INT64")
        tensor.set_data_from_numpy(encoded[name].astype(np.int64))
        inputs.append(tensor)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        result = client.infer("minilm", inputs, outputs=[grpcclient.InferRequestedOutput("sentence_embedding")])
    return result.as_numpy("sentence_embedding")


def text_embeddings(server: ServerProcess, path: str, parameters: dict | None = None) -> np.ndarray:
    text = np.array([[s.encode()] for s in LINES], dtype=object)
    if path == "grpc":
        tensor = grpcclient.InferInput("text", list(text.shape), "BYTES")
        tensor.set_data_from_numpy(text)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            result = client.infer("minilm", [tensor], outputs=[grpcclient.InferRequestedOutput("sentence_embedding")],
                                  parameters=parameters)
        return result.as_numpy("sentence_embedding")
    binary = path == "http-binary"
    tensor = httpclient.InferInput("text", list(text.shape), "BYTES")
    tensor.set_data_from_numpy(text, binary_data=binary)
    with httpclient.InferenceServerClient(server.http_url) as client:
        result = client.infer("minilm", [tensor], parameters=parameters,
                              outputs=[httpclient.InferRequestedOutput("sentence_embedding", binary_data=binary)])
    return result.as_numpy("sentence_embedding")


def openai_embeddings(server: ServerProcess) -> np.ndarray:
    body = json.dumps({"model": "minilm", "input": LINES}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v1/embeddings", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return np.array([d["embedding"] for d in json.loads(response.read())["data"]], dtype=np.float32)


@pytest.mark.parametrize("path", ["grpc", "http-binary", "http-json", "openai"])
def test_text_equals_client_side_tokens_on_every_path(server: ServerProcess, path: str) -> None:
    served = openai_embeddings(server) if path == "openai" else text_embeddings(server, path)
    assert served.shape == (len(LINES), 384)
    assert cosines(served, token_embeddings(server)).min() >= 0.9999


@pytest.mark.parametrize("path", ["grpc", "http-json"])
def test_truncate_false_over_the_wire(server: ServerProcess, path: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        text_embeddings(server, path, parameters={"truncate": False})
    message = str(caught.value)
    assert "text row 12" in message and "256" in message
    assert text_embeddings(server, path, parameters={"truncate": True}).shape == (len(LINES), 384)
