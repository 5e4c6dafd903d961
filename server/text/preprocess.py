"""Admission's text stage: a request's BYTES `text` becomes the token tensors the program takes.

A text model accepts exactly one form per request: `text` ([batch, 1] strings), or its token tensors as before.
Token tensors come out at the request's natural length ([rows, L], L its longest row, padding with attention 0)
and go on to validation and the batcher exactly as if the client had sent them. Runs wherever admission runs
(a worker thread for HTTP/inline gRPC text requests, the front's reader thread), never on the event loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from server.errors import invalid, too_large
from server.input_spec import ModelSpec
from server.text.names import TEXT_INPUT
from server.text.tokenizer import TextTokenizer
from server.types import InferRequest, InferTensor


def carries_text(request: InferRequest) -> bool:
    """Whether tokenization is ahead (cheap: transports use it to move admission off the event loop)."""
    return any(t.name == TEXT_INPUT for t in request.inputs)


def truncate_parameter(parameters: dict[str, Any]) -> bool:
    value = parameters.get("truncate", True)
    if not isinstance(value, bool):
        raise invalid(f"request parameter 'truncate' must be true or false, got {value!r}")
    return value


def decode_texts(values: Any, max_bytes: int, what: str = "text row") -> list[str]:
    """UTF-8 strings from bytes (or str) elements; invalid UTF-8, an empty string or one over `max_bytes` is the
    client's error, naming the row. Empty strings are refused as OpenAI does: there is nothing to embed."""
    texts: list[str] = []
    for i, value in enumerate(values):
        if isinstance(value, str):
            try:
                value = value.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate from a JSON "\ud800" escape
                raise invalid(f"{what} {i} is not valid Unicode: {exc.reason}") from None
        if not isinstance(value, (bytes, np.bytes_)):
            raise invalid(f"{what} {i} is a {type(value).__name__}, not a string")
        if len(value) > max_bytes:
            raise too_large(f"{what} {i} is {len(value)} bytes; the limit is {max_bytes} bytes per string")
        if not value:
            raise invalid(f"{what} {i} is an empty string; send at least one character")
        try:
            texts.append(bytes(value).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise invalid(f"{what} {i} is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    return texts


def _forms_message(spec: ModelSpec, tokenizer: TextTokenizer) -> str:
    return (f"model {spec.name!r} takes exactly one form of input per request: {TEXT_INPUT!r} (BYTES, one string "
            f"per row) or the token tensors {list(tokenizer.facts.required_inputs)}")


def prepare_text(request: InferRequest, tokenizer: TextTokenizer | None, spec: ModelSpec,
                 max_text_bytes: int) -> InferRequest:
    """`request` with its `text` tokenized (a new request), or `request` itself when it sends token tensors."""
    text = next((t for t in request.inputs if t.name == TEXT_INPUT), None)
    if tokenizer is None:
        # A config that declares `text` without a tokenizer goes on to validation, whose BYTES check names it
        # (admission.tensors_only); one that does not declare it at all is refused here, naming the model.
        if text is not None and TEXT_INPUT not in spec.inputs:
            raise invalid(f"model {spec.name!r} has no tokenizer, so it does not take {TEXT_INPUT!r}; send its "
                          f"inputs {sorted(spec.inputs)} as tensors")
        return request
    others = [t for t in request.inputs if t.name != TEXT_INPUT]
    if text is None:
        sent = {t.name for t in others}
        if any(n not in sent for n in tokenizer.facts.required_inputs):
            raise invalid(_forms_message(spec, tokenizer) + f"; the request sent {sorted(sent)}")
        return request
    if others:
        raise invalid(_forms_message(spec, tokenizer) + f", not both (it also sent {[t.name for t in others]})")
    if text.datatype != "BYTES":
        raise invalid(f"input {TEXT_INPUT!r}: datatype {text.datatype} does not match the model's BYTES")
    shape = list(text.shape)
    if len(shape) != 2 or shape[1] != 1 or not 1 <= shape[0] <= spec.max_batch_size:
        raise invalid(f"input {TEXT_INPUT!r}: shape {shape} must be [rows, 1] with rows in 1..{spec.max_batch_size}")
    values = np.asarray(text.data).reshape(-1)
    if values.size != shape[0]:
        raise invalid(f"input {TEXT_INPUT!r}: {values.size} strings for shape {shape}")
    strings = decode_texts(values, max_text_bytes)
    tokens = tokenizer.encode(strings, truncate_parameter(request.parameters))
    inputs = [InferTensor(name, "INT64", array.shape, array) for name, array in tokens.arrays.items()]
    return dataclasses.replace(request, inputs=inputs)
