"""The unit a scheduler queues, how its answer travels back, and the contract every scheduler offers.

Schedulers are thread-native (instances.py): a request may be submitted from the event loop (HTTP, inline gRPC)
or from a gRPC front connection's reader thread (grpc_fastpath.py), and it is answered on the compute thread
that ran it. The answer goes to the item's `Completion`; each waiter kind brings its own (an asyncio future on
its loop, a reply frame to the front), so neither side needs the other's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

Outputs = dict[str, torch.Tensor]


class Channel(Protocol):
    """Where a group of completions goes; flushed once after each batch, so a batch's answers travel together."""

    def flush(self) -> None:
        ...


class Completion(Protocol):
    """Receives one request's outcome, exactly once, on a compute thread (or the thread that refused it)."""

    @property
    def channel(self) -> Channel:
        """Flushed once after the batch this completion's item was answered in."""
        ...

    def cancelled(self) -> bool:
        """The client went away: a queued item with a cancelled completion is dropped, never computed."""
        ...

    def resolve(self, outputs: Outputs) -> None:
        ...

    def reject(self, error: BaseException) -> None:
        ...


@dataclass(slots=True, eq=False)
class WorkItem:
    """One request's tensors on their way to a runtime; `completion` receives that request's outputs."""

    inputs: dict[str, torch.Tensor]
    rows: int  # rows along the batch dimension (1 for models without one)
    arrival_ns: int
    completion: Completion | None = field(default=None, repr=False)
    priority: int = 0  # 1 is highest, as in Triton; 0 = the model's default level
    timeout_ns: int = 0  # 0 = no queue timeout requested
    queue_start_ns: int = 0

    def shape_key(self) -> tuple:
        """Requests merge only when every input agrees on dtype and non-batch shape."""
        return tuple((n, t.dtype, tuple(t.shape[1:])) for n, t in sorted(self.inputs.items()))


class Scheduler(Protocol):
    """Queues work for one model version and runs it on that version's runtime."""

    def submit(self, item: WorkItem) -> None:
        """Queue `item` (its completion set) from any thread; raises ServingError when refused at once."""
        ...

    def cancel(self, item: WorkItem) -> bool:
        """Withdraw a queued item; True when it was still queued (it will never be computed nor answered)."""
        ...

    async def infer(self, item: WorkItem) -> Outputs:
        """For a caller on an event loop: submit and await the outputs; cancelling the await withdraws it."""
        ...

    def pending(self) -> int:
        """Requests accepted and not yet answered."""
        ...

    async def close(self) -> None:
        """Stop accepting, finish what is queued, release the compute threads."""
        ...
