"""Admitting an inference request: the checks against the model's config, and the in-flight bound.

Kept apart from the dataplane because admission runs on more than one thread: on the event loop for HTTP and
inline gRPC, and on a gRPC front connection's reader thread (grpc_fastpath.py). Everything here is either pure
or guarded by its own lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from server.batching.work import Scheduler, WorkItem
from server.classification import ClassificationPlan
from server.codec.bytes_tensor import is_bytes_array
from server.errors import invalid, too_large
from server.input_spec import ModelSpec
from server.metrics import ModelRecorder
from server.types import BYTES, InferRequest, RequestedOutput, to_torch


@dataclass(slots=True, eq=False)
class Admission:
    """One admitted request until it is answered: where it runs, what it asked for, how it is recorded."""

    request: InferRequest
    version: str
    recorder: ModelRecorder
    scheduler: Scheduler
    item: WorkItem
    wanted: list[Any]
    classes: ClassificationPlan | None = None  # outputs asked for as top-k classes (classification.py)


class InFlight:
    """Requests admitted and not yet answered, across every transport and thread; `drain` waits for none."""

    def __init__(self) -> None:
        self._count = 0
        self._zero = threading.Condition()

    def enter(self, limit: int) -> bool:
        """Count one more unless `limit` are already in flight (load shedding)."""
        with self._zero:
            if self._count >= limit:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._zero:
            self._count -= 1
            if not self._count:
                self._zero.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is in flight; False when `timeout` passed first (run it off the loop)."""
        deadline = time.monotonic() + timeout
        with self._zero:
            while self._count:
                left = deadline - time.monotonic()
                if left <= 0 or not self._zero.wait(left):
                    return not self._count
            return True


def validate_inputs(request: InferRequest, spec: ModelSpec, max_elements: int) -> tuple[dict[str, Any], int]:
    """The request's inputs as tensors, by name, and its row count; raises INVALID_ARGUMENT naming the problem."""
    seen: dict[str, Any] = {}
    rows = 1
    total = 0
    for tensor in request.inputs:
        expected = spec.inputs.get(tensor.name)
        if expected is None:
            raise invalid(f"unexpected input {tensor.name!r} for model {spec.name!r}; expected {sorted(spec.inputs)}")
        if tensor.name in seen:
            raise invalid(f"input {tensor.name!r} appears more than once")
        if tensor.datatype != expected.datatype:
            raise invalid(f"input {tensor.name!r}: datatype {tensor.datatype} "
                          f"does not match the model's {expected.datatype}")
        shape = list(tensor.shape)
        want = expected.want
        if len(shape) != len(want) or any(w != -1 and w != s for w, s in zip(want, shape, strict=True)) or \
                any(s < 0 for s in shape):
            raise invalid(f"input {tensor.name!r}: shape {shape} does not match the model's {list(want)}")
        if spec.batched:
            if not 1 <= shape[0] <= spec.max_batch_size:
                raise invalid(f"input {tensor.name!r}: batch size {shape[0]} is outside 1..{spec.max_batch_size}")
            if seen and shape[0] != rows:
                raise invalid(f"input {tensor.name!r}: batch size {shape[0]} differs from other inputs' {rows}")
            rows = shape[0]
        total += tensor.data.size
        if total > max_elements:
            raise too_large(f"request holds more than {max_elements} tensor elements")
        data = tensor.data.reshape(shape)
        # BYTES stays the numpy object array the codec made (text preprocessing turns it into tokens)
        seen[tensor.name] = data if expected.datatype == BYTES else to_torch(data, expected.datatype)
    missing = [n for n in spec.required if n not in seen]
    if missing:
        raise invalid(f"model {spec.name!r} requires inputs {missing} that the request did not send")
    return seen, rows


def tensors_only(inputs: dict[str, Any], model: str) -> None:
    """Refuse BYTES inputs still undecoded when the request reaches the batcher: the model cannot use text.

    Runs after any text preprocessing, which replaces a tokenizer model's BYTES inputs by token tensors, so what
    is left here is text sent to a model without a tokenizer: a client error, not a runtime failure."""
    for name, value in inputs.items():
        if is_bytes_array(value):
            raise invalid(f"model {model!r} has no tokenizer (text preprocessing), so it cannot use the BYTES "
                          f"(text) input {name!r}; send its tensor inputs instead")


def requested_outputs(request: InferRequest, spec: ModelSpec) -> list[Any]:
    if not request.outputs:
        return [RequestedOutput(n) for n in spec.outputs]
    for out in request.outputs:
        if out.name not in spec.outputs:
            raise invalid(f"unknown output {out.name!r} requested from model {spec.name!r}; "
                          f"it has {list(spec.outputs)}")
    return request.outputs


def int_param(parameters: dict[str, Any], name: str) -> int:
    value = parameters.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"request parameter {name!r} must be a non-negative integer, got {value!r}")
    return value
