"""Triton's dynamic-batching rule as one pure function: given the queue in order, which batch runs now?

The rule (Triton's dynamic batcher): take queued requests in priority/arrival order that share the head
request's shape key; run at once if `max_batch_size` rows are reached (or the next request would overflow it);
otherwise run the largest preferred batch size the prefix passes through; otherwise run everything available once
the oldest chosen request has waited `max_queue_delay`; otherwise wait until then. Requests with other shapes are
skipped, never merged, and are considered again when they reach the head.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from server.batching.work import WorkItem


@dataclass(slots=True, eq=False)
class Entry:
    """A queued item plus what the queue computed once at enqueue time."""

    item: WorkItem
    key: tuple
    deadline_ns: int  # 0 = no queue timeout
    length: int = 0  # sequence length, for models that pad (ragged.py); 0 otherwise


@dataclass(slots=True)
class Plan:
    """`batch` to run now; when empty, `wake_at_ns` is when to decide again (None: on the next arrival)."""

    batch: list[Entry] = field(default_factory=list)
    wake_at_ns: int | None = None


def plan_batch(ordered: Iterable[Entry], now_ns: int, max_batch: int, preferred: frozenset[int],
               delay_ns: int) -> Plan:
    """Choose the next batch from `ordered` (highest priority first, then arrival)."""
    chosen: list[Entry] = []
    key: tuple | None = None
    rows = 0
    preferred_len = 0
    full = False
    for entry in ordered:
        if key is None:
            key = entry.key
        elif entry.key != key:
            continue
        if rows + entry.item.rows > max_batch:
            full = True
            break
        chosen.append(entry)
        rows += entry.item.rows
        if rows in preferred:
            preferred_len = len(chosen)
        if rows >= max_batch:
            full = True
            break
    if not chosen:
        return Plan()
    return settle(chosen, full, preferred_len, now_ns, delay_ns)


def settle(chosen: list[Entry], full: bool, preferred_len: int, now_ns: int, delay_ns: int) -> Plan:
    """Triton's ending, shared by both rules: a full batch runs; else the largest preferred prefix; else all of
    it once the oldest chosen request has waited `delay_ns`; else wait until then."""
    if full:
        return Plan(chosen)
    if preferred_len:
        return Plan(chosen[:preferred_len])
    due = min(e.item.queue_start_ns for e in chosen) + delay_ns
    if due <= now_ns:
        return Plan(chosen)
    return Plan([], due)
