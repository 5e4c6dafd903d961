"""The OpenAI-compatible routes on the HTTP port: `POST /v1/embeddings` and `GET /v1/models`.

A thin adapter over the same DataPlane as KServe v2: the texts are tokenized once (in a worker thread, by the
model's own tokenizer, so `usage` counts real tokens), split into requests of at most max_batch_size rows, each
at its natural length, and sent through `DataPlane.infer` like any other request: batched by the model's
scheduler, bounded by the in-flight limit, counted in statistics and /metrics. Every failure is the one
ServingError table's status rendered in OpenAI's envelope `{"error": {"message", "type", "code"}}`, which the
official client turns into BadRequestError / NotFoundError / APIStatusError.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from server.codec.http_json import dumps, parse_object
from server.dataplane import DataPlane
from server.errors import ErrorKind, as_serving_error, invalid
from server.settings import Settings
from server.text.preprocess import decode_texts
from server.text.tokenizer import TextTokenizer, Tokens
from server.transport.http_body import read_body
from server.transport.http_errors import JSON
from server.transport.openai_request import EmbeddingsCall, check_dimensions, parse_call, response_document, shorten
from server.types import InferRequest, InferTensor, RequestedOutput

log = logging.getLogger("twofour.openai")

# OpenAI's `code` for the kinds its clients look at; the others carry the kind's own name
_CODES = {ErrorKind.NOT_FOUND: "model_not_found", ErrorKind.TOO_LARGE: "request_too_large",
          ErrorKind.UNAVAILABLE: "service_unavailable"}


def openai_error(exc: BaseException) -> Response:
    error = as_serving_error(exc)
    if error.kind == ErrorKind.INTERNAL:
        log.error("OpenAI route failed", exc_info=exc)
    kind = "invalid_request_error" if error.status.http < 500 else "server_error"
    body = {"error": {"message": error.message, "type": kind, "code": _CODES.get(error.kind, error.kind.value)}}
    return Response(dumps(body), status_code=error.status.http, media_type=JSON)


def _openai_guarded(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapper(*args: Any) -> Response:
        try:
            return await handler(*args)
        except Exception as exc:  # noqa: BLE001 - every failure answers in OpenAI's envelope
            return openai_error(exc)

    return wrapper


def _chunks(tokens: Tokens, rows: int) -> list[dict[str, np.ndarray]]:
    """Requests of at most `rows` rows, each cut to its own longest row (its natural length)."""
    pieces = []
    for start in range(0, len(tokens.lengths), rows):
        width = max(tokens.lengths[start:start + rows])
        pieces.append({n: np.ascontiguousarray(a[start:start + rows, :width]) for n, a in tokens.arrays.items()})
    return pieces


class OpenAIEndpoints:
    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self._dataplane = dataplane
        self._limit = settings.max_request_bytes
        self._body_timeout = settings.body_timeout_secs
        self._max_text_bytes = settings.max_text_bytes

    @_openai_guarded
    async def models(self, request: Request) -> Response:
        data = [{"id": e.name, "object": "model", "created": 0, "owned_by": "twofour"}
                for e in self._dataplane.registry.entries() if e.state == "READY"]
        return Response(dumps({"object": "list", "data": data}), media_type=JSON)

    @_openai_guarded
    async def embeddings(self, request: Request) -> Response:
        body = await read_body(request, self._limit, self._body_timeout)
        call = parse_call(parse_object(body, "embeddings request"))
        entry, loaded = self._dataplane.registry.resolve(call.model)
        tokenizer = loaded.text
        if tokenizer is None or not tokenizer.facts.embedding_output:
            raise invalid(f"model {call.model!r} is not a text embedding model (it has no tokenizer or no pooled "
                          "embedding output); /v1/embeddings serves converted sentence-transformers models")
        assert entry.config is not None
        output = tokenizer.facts.embedding_output
        width = next(int(t.dims[-1]) for t in entry.config.output if t.name == output)
        check_dimensions(call.dimensions, width, tokenizer.facts.normalized, call.model)
        tokens = await asyncio.to_thread(self._tokenize, tokenizer, call)
        requests = [InferRequest(call.model, str(loaded.version),
                                 [InferTensor(n, "INT64", a.shape, a) for n, a in piece.items()],
                                 [RequestedOutput(output)])
                    for piece in _chunks(tokens, max(entry.config.max_batch_size, 1))]
        results = await asyncio.gather(*(self._dataplane.infer(r) for r in requests), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        embeddings = np.concatenate([r.outputs[0].data for r in results])  # type: ignore[union-attr]
        document = response_document(call.model, shorten(embeddings, call.dimensions), call.encoding_format,
                                     sum(tokens.lengths))
        return Response(dumps(document), media_type=JSON)

    def _tokenize(self, tokenizer: TextTokenizer, call: EmbeddingsCall) -> Tokens:
        if call.token_ids is not None:
            return tokenizer.from_ids(call.token_ids)
        assert call.texts is not None
        return tokenizer.encode(decode_texts(call.texts, self._max_text_bytes, "input"), call.truncate, "input")


def openai_routes(dataplane: DataPlane, settings: Settings) -> list[tuple[str, Any, str]]:
    """(path, endpoint, method) for create_http_app; unknown routes under /v1 get FastAPI's 404."""
    e = OpenAIEndpoints(dataplane, settings)
    return [("/v1/embeddings", e.embeddings, "POST"), ("/v1/models", e.models, "GET")]
