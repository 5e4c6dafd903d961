"""Answers for callers on an event loop: compute threads settle their asyncio futures, one wake-up per batch.

Why an inbox per loop rather than `call_soon_threadsafe` per future: each call writes to the loop's self-pipe, a
syscall and a cross-CPU wake-up; a batch of 32 would pay 32 of them. The inbox collects a batch's outcomes and
its `flush` (once per batch, by the scheduler) wakes the loop once to settle them all in one callback.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

from server.batching.work import Outputs

_Outcome = tuple["asyncio.Future[Outputs]", Outputs | None, BaseException | None]


class LoopInbox:
    """Outcomes for futures of one loop, handed over from other threads in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._outcomes: list[_Outcome] = []

    def put(self, outcome: _Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    def flush(self) -> None:
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        if outcomes:
            try:
                self._loop.call_soon_threadsafe(_settle, outcomes)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _settle(outcomes: list[_Outcome]) -> None:
    for future, outputs, error in outcomes:
        if future.done():  # cancelled meanwhile
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outputs)  # type: ignore[arg-type]


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = weakref.WeakKeyDictionary()


def inbox_for(loop: asyncio.AbstractEventLoop) -> LoopInbox:
    """The loop's one inbox (called on that loop's thread only, so creating it needs no lock)."""
    inbox = _inboxes.get(loop)
    if inbox is None:
        inbox = _inboxes[loop] = LoopInbox(loop)
    return inbox


class FutureCompletion:
    """A Completion that settles an asyncio future on its own loop."""

    __slots__ = ("future", "channel")

    def __init__(self, future: asyncio.Future[Outputs], inbox: LoopInbox) -> None:
        self.future = future
        self.channel = inbox

    def cancelled(self) -> bool:
        return self.future.done()  # only a cancel settles it before the scheduler does

    def resolve(self, outputs: Outputs) -> None:
        self.channel.put((self.future, outputs, None))

    def reject(self, error: BaseException) -> None:
        self.channel.put((self.future, None, error))
