"""`/v1/embeddings` and `/v1/models` through the official `openai` client, against a real server process.

Embeddings served from text must equal the model's output on client-side tokens sent over gRPC (tritonclient),
cosine >= 0.9999 per row (the same program on the same ids; only padding inside a batch can move fp32 sums, by
~1e-7). Errors must come back in OpenAI's envelope with the error table's status, and the server keeps serving.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support.server import ServerProcess
from tests.support.text_models import DATA, minilm_path

openai = pytest.importorskip("openai")
LINES = (DATA / "heldout.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def server(text_server: ServerProcess) -> ServerProcess:
    return text_server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    return openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0, timeout=120)


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


def grpc_embeddings(server: ServerProcess, lines: list[str]) -> np.ndarray:
    """The model's output on client-side tokens, over gRPC, in requests of at most 16 rows."""
    parts = []
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        for start in range(0, len(lines), 16):
            encoded = tokenizer()(lines[start:start + 16], padding=True, truncation=True, max_length=256,
                                  return_tensors="np")
            inputs = []
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                tensor = grpcclient.InferInput(name, list(encoded[name].shape), "INT64")
                tensor.set_data_from_numpy(encoded[name].astype(np.int64))
                inputs.append(tensor)
            result = triton.infer("minilm", inputs, outputs=[grpcclient.InferRequestedOutput("sentence_embedding")])
            parts.append(result.as_numpy("sentence_embedding"))
    return np.concatenate(parts)


def matrix(response: Any) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def post(server: ServerProcess, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://{server.http_url}/v1/embeddings", body,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_text_embeddings_equal_client_side_tokens_over_grpc(server: ServerProcess, client: Any) -> None:
    lines = LINES[:40] + [" ".join(LINES[:40])]  # 41 rows: three requests of <= 16; one row truncated at 256
    response = client.embeddings.create(model="minilm", input=lines)
    served = matrix(response)
    assert served.shape == (41, 384) and response.model == "minilm" and response.object == "list"
    assert cosines(served, grpc_embeddings(server, lines)).min() >= 0.9999
    lengths = tokenizer()(lines, truncation=True, max_length=256)["input_ids"]
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(len(ids) for ids in lengths)


def test_every_input_form_gives_the_same_embedding(client: Any) -> None:
    line = LINES[7]
    ids = tokenizer()(line, truncation=True, max_length=256)["input_ids"]
    one = matrix(client.embeddings.create(model="minilm", input=line))
    listed = matrix(client.embeddings.create(model="minilm", input=[line, LINES[8]]))
    tokens = matrix(client.embeddings.create(model="minilm", input=ids))
    token_lists = matrix(client.embeddings.create(model="minilm", input=[ids, ids[:5]]))
    for other in (listed[:1], tokens, token_lists[:1]):
        assert cosines(one, other).min() >= 0.9999


def test_base64_is_little_endian_float32(client: Any, server: ServerProcess) -> None:
    floats = matrix(client.embeddings.create(model="minilm", input=LINES[:3]))
    status, document = post(server, json.dumps({"model": "minilm", "input": LINES[:3],
                                                "encoding_format": "base64"}).encode())
    assert status == 200
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in document["data"]])
    assert cosines(decoded, floats).min() >= 0.9999
    # asked for base64 explicitly, the client hands the strings over as they came
    via_client = client.embeddings.create(model="minilm", input=LINES[:3], encoding_format="base64")
    again = np.frombuffer(base64.b64decode(via_client.data[0].embedding), dtype="<f4")
    assert again.shape == (384,) and cosines(again[None], floats[:1]).min() >= 0.9999


def test_dimensions_truncate_and_renormalize(client: Any) -> None:
    full = matrix(client.embeddings.create(model="minilm", input=LINES[:4]))
    short = matrix(client.embeddings.create(model="minilm", input=LINES[:4], dimensions=64))
    assert short.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    assert cosines(short, full[:, :64]).min() >= 0.9999
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="minilm", input="x", dimensions=385)
    assert "385" in caught.value.message and "384" in caught.value.message


def test_a_call_larger_than_max_batch_size_is_split(client: Any) -> None:
    lines = [f"short sentence number {i}" for i in range(2048)]  # short: the test is the split, not the compute
    served = matrix(client.embeddings.create(model="minilm", input=lines))
    assert served.shape == (2048, 384)
    alone = matrix(client.embeddings.create(model="minilm", input=[lines[1000], lines[2047]]))
    assert cosines(served[[1000, 2047]], alone).min() >= 0.9999


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"model": "nope", "input": "x"}, 404, ["unknown model", "nope"]),
    ({"model": "minilm", "input": ""}, 400, ["input 0", "empty string"]),
    ({"model": "minilm", "input": ["fine", ""]}, 400, ["input 1", "empty string"]),
    ({"model": "minilm", "input": []}, 400, ["'input' must be"]),
    ({"model": "minilm", "input": ["x"] * 100_000}, 400, ["100000 items", "2048"]),
    ({"model": "minilm", "input": "a" * (10 << 20)}, 413, ["input 0", "bytes"]),
    ({"model": "minilm", "input": [[1, 2], [30522]]}, 400, ["input 1", "token id 30522"]),
    ({"model": "minilm", "input": "x", "encoding_format": "hex"}, 400, ["encoding_format"]),
    ({"model": "minilm", "input": "x", "dimensions": 0}, 400, ["dimensions"]),
    ({"model": "minilm", "input": "word " * 300, "truncate": False}, 400, ["input 0", "256"]),
    ({"model": "mlp", "input": "x"}, 400, ["'mlp' is not a text embedding model"]),
    ({"input": "x"}, 400, ["'model'"]),
], ids=["unknown-model", "empty", "empty-row", "no-input", "100k-rows", "10MB", "bad-token", "format", "dims-0",
        "truncate-false", "no-tokenizer", "no-model"])
def test_bad_requests_get_openai_errors(server: ServerProcess, body: dict[str, Any], status: int,
                                        words: list[str]) -> None:
    got, document = post(server, json.dumps(body).encode())
    assert got == status, document
    error = document["error"]
    assert set(error) == {"message", "type", "code"} and error["type"] == "invalid_request_error"
    assert all(w in error["message"] for w in words), error["message"]
    assert post(server, b'{"model": "minilm", "input": "still serving"}')[0] == 200


def test_invalid_unicode_and_json(server: ServerProcess) -> None:
    status, document = post(server, b'{"model": "minilm", "input": ["ok", "\\ud800"]}')
    assert status == 400 and "error" in document
    status, document = post(server, b'{"model": "minilm", "input": ')
    assert status == 400 and document["error"]["type"] == "invalid_request_error"


def test_client_errors_map_to_the_clients_exceptions(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="nope", input="x")
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"


def test_models_lists_the_ready_models(client: Any) -> None:
    ids = {m.id for m in client.models.list().data}
    assert ids == {"minilm", "mlp"}


def test_calls_are_counted_in_statistics(server: ServerProcess, client: Any) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        def count() -> int:
            stats = triton.get_inference_statistics("minilm").model_stats
            return sum(s.inference_count for s in stats)

        before = count()
        client.embeddings.create(model="minilm", input=LINES[:20])
        assert count() == before + 20
