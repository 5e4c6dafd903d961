"""A real runtime behind a gate the test opens: makes "the next request is queued behind this one" certain."""

from __future__ import annotations

import threading
from typing import Any

import torch


class GatedRuntime:
    """The real CPU runtime, but each infer waits until the test opens the gate."""

    def __init__(self, inner: Any, gate: threading.Event) -> None:
        self._inner, self._gate = inner, gate
        self.calls = 0

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        assert self._gate.wait(30), "test never opened the gate"
        return self._inner.infer(batch)

    def describe(self) -> Any:
        return self._inner.describe()

    def close(self) -> None:
        self._inner.close()
