"""The body of an OpenAI `POST /v1/embeddings`, checked field by field, and the response document it gets.

Kept apart from the route (openai.py) so the rules are plain functions: what `input` may be (a string, strings,
one token-id list, token-id lists), `encoding_format` (float | base64 of little-endian float32, as OpenAI's
client decodes it), `dimensions` (the first d values, L2-renormalized, only where the embedding is normalized).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.errors import invalid

MAX_INPUTS = 2048  # OpenAI's own limit on inputs per call; larger calls are a 400, not a slow 100,000-row job


@dataclass(frozen=True)
class EmbeddingsCall:
    model: str
    texts: list[Any] | None  # strings (decoded and checked by server.text.preprocess.decode_texts)
    token_ids: list[list[int]] | None  # or token-id lists
    encoding_format: str
    dimensions: int | None
    truncate: bool


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def parse_call(body: dict[str, Any]) -> EmbeddingsCall:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' must be the name of a model in the repository (GET /v1/models lists them)")
    raw = body.get("input")
    texts: list[Any] | None = None
    ids: list[list[int]] | None = None
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and _is_ids(raw):
        ids = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw):
        texts = raw
    elif isinstance(raw, list) and raw and all(isinstance(v, list) and _is_ids(v) for v in raw):
        ids = raw
    else:
        raise invalid("'input' must be a non-empty string, a list of strings, a list of token ids or a list of "
                      "token-id lists")
    count = len(texts if texts is not None else ids or [])
    if count > MAX_INPUTS:
        raise invalid(f"'input' holds {count} items; at most {MAX_INPUTS} per request")
    if ids is not None:
        empty = next((i for i, row in enumerate(ids) if not row), None)
        if empty is not None:
            raise invalid(f"input {empty} is an empty token list; send at least one token")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise invalid(f"'dimensions' must be a positive integer, got {dimensions!r}")
    truncate = body.get("truncate", True)  # an extension (TEI's name): false makes over-long text a 400
    if not isinstance(truncate, bool):
        raise invalid(f"'truncate' must be true or false, got {truncate!r}")
    return EmbeddingsCall(model, texts, ids, encoding, dimensions, truncate)


def check_dimensions(dimensions: int | None, width: int, normalized: bool, model: str) -> None:
    if dimensions is None:
        return
    if dimensions > width:
        raise invalid(f"'dimensions' {dimensions} is larger than model {model!r}'s {width}")
    if not normalized and dimensions != width:
        raise invalid(f"model {model!r} does not normalize its embeddings, so 'dimensions' cannot shorten them "
                      "(truncating an unnormalized embedding changes what its distances mean)")


def shorten(embeddings: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first `dimensions` values of each row, L2-renormalized (what OpenAI's text-embedding-3 models do)."""
    if dimensions is None or dimensions == embeddings.shape[1]:
        return embeddings
    head = embeddings[:, :dimensions].astype(np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return np.ascontiguousarray(head / np.maximum(norms, 1e-12))


def response_document(model: str, embeddings: np.ndarray, encoding: str, prompt_tokens: int) -> dict[str, Any]:
    rows = np.ascontiguousarray(embeddings, dtype="<f4")
    if encoding == "base64":
        data = [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
    else:
        data = list(rows)  # numpy rows: orjson writes them as number lists
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
