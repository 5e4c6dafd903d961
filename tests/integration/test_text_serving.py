"""Text in through the DataPlane (the stage every transport calls), on the converted all-MiniLM-L6-v2.

Requests are the decoded `InferRequest`s a transport hands over (BYTES as a numpy object array of `bytes`, shape
[rows, 1]), so this runs with whatever wire codecs exist; test_text_wire.py sends the same over the wire.
Tolerance: the text path and the client-token path run the same program on the same ids; only the row layout
inside a batch can differ (padding to another length changes fp32 summation order), which moves a cosine by
~1e-7, far inside the 1e-4 that the issue sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.app import App, build_app
from server.errors import ErrorKind, ServingError
from server.input_spec import model_spec
from server.settings import Settings
from server.text.preprocess import prepare_text
from server.types import InferRequest, InferTensor, RequestedOutput
from tests.support.text_models import DATA, minilm_path

LINES = (DATA / "heldout.txt").read_text(encoding="utf-8").splitlines()
LONG = " ".join(LINES[:40])


@pytest.fixture(scope="module")
def app(text_repository: Path) -> Iterator[App]:
    application = build_app(Settings(model_repository=text_repository, device="cpu", max_text_bytes=1 << 20))
    asyncio.run(application.registry.load_all())
    application.dataplane.starting = False
    yield application
    asyncio.run(application.registry.close())


def text_tensor(lines: list[bytes | str]) -> InferTensor:
    data = np.array([[s.encode() if isinstance(s, str) else s] for s in lines], dtype=object)
    return InferTensor("text", "BYTES", data.shape, data)


def client_tokens(lines: list[str]) -> list[InferTensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    encoded = tokenizer(lines, padding=True, truncation=True, max_length=256, return_tensors="np")
    return [InferTensor(n, "INT64", encoded[n].shape, encoded[n].astype(np.int64))
            for n in ("input_ids", "attention_mask", "token_type_ids")]


def infer(app: App, inputs: list[InferTensor], model: str = "minilm", parameters: dict | None = None) -> np.ndarray:
    request = InferRequest(model, "", inputs, [RequestedOutput("sentence_embedding")], "", parameters or {})
    response = asyncio.run(app.dataplane.infer(request))
    return response.outputs[0].data


def refused(app: App, inputs: list[InferTensor], model: str = "minilm",
            parameters: dict | None = None) -> ServingError:
    with pytest.raises(ServingError) as caught:
        infer(app, inputs, model, parameters)
    return caught.value


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("lines", [LINES[:16], LINES[100:103] + [LONG], ["one"]], ids=["sixteen", "long", "one"])
def test_text_equals_client_side_tokens(app: App, lines: list[str]) -> None:
    from_text = infer(app, [text_tensor(lines)])
    from_tokens = infer(app, client_tokens(lines))
    assert from_text.shape == (len(lines), 384)
    assert cosines(from_text, from_tokens).min() >= 0.9999


def test_tokens_come_at_the_requests_natural_length(app: App) -> None:
    _, loaded = app.registry.resolve("minilm")
    spec = model_spec(app.registry.entry("minilm").config)  # type: ignore[arg-type]
    request = InferRequest("minilm", "", [text_tensor(["a b", "a somewhat longer sentence here"])])
    prepared = prepare_text(request, loaded.text, spec, 1 << 20)
    shapes = {t.name: t.shape for t in prepared.inputs}
    width = client_tokens(["a b", "a somewhat longer sentence here"])[0].shape[1]
    assert shapes == {n: (2, width) for n in ("input_ids", "attention_mask", "token_type_ids")}
    assert prepared.inputs[1].data[0].tolist() == [1, 1, 1, 1] + [0] * (width - 4)  # [CLS] a b [SEP], then pads


def test_exactly_one_form(app: App) -> None:
    tokens = client_tokens(["hello"])
    both = refused(app, [text_tensor(["hello"]), *tokens])
    assert both.kind == ErrorKind.INVALID_ARGUMENT and "exactly one form" in both.message and "not both" in both.message
    neither = refused(app, [tokens[1]])  # attention_mask alone
    assert neither.kind == ErrorKind.INVALID_ARGUMENT and "exactly one form" in neither.message
    assert "input_ids" in neither.message
    none = refused(app, [])
    assert none.kind == ErrorKind.INVALID_ARGUMENT and "exactly one form" in none.message


def test_truncate_false_refuses_over_long_text(app: App) -> None:
    error = refused(app, [text_tensor(["short", LONG])], parameters={"truncate": False})
    assert error.kind == ErrorKind.INVALID_ARGUMENT and "text row 1" in error.message and "256" in error.message
    assert infer(app, [text_tensor(["short", LONG])], parameters={"truncate": True}).shape == (2, 384)
    wrong = refused(app, [text_tensor(["short"])], parameters={"truncate": "no"})
    assert wrong.kind == ErrorKind.INVALID_ARGUMENT and "truncate" in wrong.message


@pytest.mark.parametrize(("rows", "kind", "words"), [
    ([b"fine", b"caf\xc3", b"x"], ErrorKind.INVALID_ARGUMENT, ["text row 1", "not valid UTF-8"]),
    ([b"fine", b""], ErrorKind.INVALID_ARGUMENT, ["text row 1", "empty string"]),
    ([b"a" * (10 << 20)], ErrorKind.TOO_LARGE, ["text row 0", "1048576 bytes"]),
    ([b"x"] * 17, ErrorKind.INVALID_ARGUMENT, ["shape [17, 1]", "1..16"]),
], ids=["invalid-utf8", "empty", "10MB", "rows"])
def test_bad_text_is_the_clients_error(app: App, rows: list[bytes], kind: ErrorKind, words: list[str]) -> None:
    error = refused(app, [text_tensor(rows)])
    assert error.kind == kind and all(w in error.message for w in words), error.message
    assert infer(app, [text_tensor(["still serving"])]).shape == (1, 384)


def test_text_to_a_model_without_a_tokenizer(app: App) -> None:
    request = InferRequest("mlp", "", [text_tensor(["hello"])])
    with pytest.raises(ServingError) as caught:
        asyncio.run(app.dataplane.infer(request))
    assert caught.value.kind == ErrorKind.INVALID_ARGUMENT
    assert "'mlp' has no tokenizer" in caught.value.message and "INPUT0" in caught.value.message


def test_text_requests_are_counted_like_any_other(app: App) -> None:
    before = app.dataplane.statistics("minilm")[0][2].inference_count
    infer(app, [text_tensor(["counted", "twice"])])
    assert app.dataplane.statistics("minilm")[0][2].inference_count == before + 2
