"""The unit a scheduler queues, and the contract every scheduler offers the dataplane."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(slots=True, eq=False)
class WorkItem:
    """One request's tensors on their way to a runtime; `future` receives that request's outputs."""

    inputs: dict[str, torch.Tensor]
    rows: int  # rows along the batch dimension (1 for models without one)
    arrival_ns: int
    future: asyncio.Future = field(repr=False)
    priority: int = 0  # 1 is highest, as in Triton; 0 = the model's default level
    timeout_ns: int = 0  # 0 = no queue timeout requested
    queue_start_ns: int = 0

    def shape_key(self) -> tuple:
        """Requests merge only when every input agrees on dtype and non-batch shape."""
        return tuple((n, t.dtype, tuple(t.shape[1:])) for n, t in sorted(self.inputs.items()))


class Scheduler(Protocol):
    """Queues work for one model version and runs it on that version's runtime."""

    async def infer(self, item: WorkItem) -> dict[str, torch.Tensor]:
        """The item's outputs, by config output name; raises ServingError on rejection or failure."""
        ...

    def pending(self) -> int:
        """Requests accepted and not yet answered."""
        ...

    async def close(self) -> None:
        """Stop accepting, finish what is queued, release executors."""
        ...
