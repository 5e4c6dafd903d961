"""Per-model request queue with Triton's priority levels and queue policies.

One FIFO per priority level (1 = highest). Each level has a policy: `max_queue_size` (0 = unbounded; a full level
rejects at once), a queue timeout (`default_timeout_microseconds`, lowered per request by its `timeout` parameter
when `allow_timeout_override`), and what a timed-out request suffers: REJECT (answered UNAVAILABLE) or DELAY
(moved behind the level's requests that have not timed out). Timeouts are applied when a batch is being formed,
as in Triton. Everything here runs on the event loop, so it needs no locks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.plan import Entry
from server.batching.ragged import PaddingSpec
from server.batching.work import WorkItem
from server.errors import ServingError, unavailable


@dataclass(frozen=True, slots=True)
class LevelPolicy:
    max_queue_size: int = 0
    timeout_ns: int = 0
    allow_override: bool = False
    delay_on_timeout: bool = False

    @classmethod
    def from_proto(cls, policy: mc.ModelQueuePolicy) -> "LevelPolicy":
        return cls(max_queue_size=policy.max_queue_size,
                   timeout_ns=policy.default_timeout_microseconds * 1000,
                   allow_override=policy.allow_timeout_override,
                   delay_on_timeout=policy.timeout_action == mc.ModelQueuePolicy.DELAY)

    def deadline(self, item: WorkItem, now_ns: int) -> int:
        """Absolute queue deadline (0 = none); a request may shorten the default, never lengthen it."""
        timeout = self.timeout_ns
        if self.allow_override and item.timeout_ns and (not timeout or item.timeout_ns < timeout):
            timeout = item.timeout_ns
        return now_ns + timeout if timeout else 0


class _Level:
    __slots__ = ("policy", "ready", "delayed", "timed")

    def __init__(self, policy: LevelPolicy) -> None:
        self.policy = policy
        self.ready: deque[Entry] = deque()
        self.delayed: deque[Entry] = deque()
        self.timed = 0  # entries in `ready` with a deadline: lets expiry skip levels that have none

    def __len__(self) -> int:
        return len(self.ready) + len(self.delayed)


class PriorityQueue:
    """The queued, not yet executing requests of one model version."""

    def __init__(self, batching: mc.ModelDynamicBatching, padding: PaddingSpec | None = None) -> None:
        """`padding`: the model pads (ragged.py), so entries are keyed without their sequence dim and carry
        their length."""
        self._padding = padding
        count = max(1, batching.priority_levels)
        self.default_level = batching.default_priority_level if batching.priority_levels else 1
        if not 1 <= self.default_level <= count:
            raise ValueError(f"default_priority_level {self.default_level} is outside 1..{count}")
        stray = sorted(n for n in batching.priority_queue_policy if not 1 <= n <= count)
        if stray:  # silently ignoring them would drop queue limits the operator asked for
            raise ValueError(f"priority_queue_policy names priority levels {stray} outside 1..{count} "
                             f"(priority_levels {batching.priority_levels})")
        default = LevelPolicy.from_proto(batching.default_queue_policy)
        self._levels = [
            _Level(LevelPolicy.from_proto(batching.priority_queue_policy[n])
                   if n in batching.priority_queue_policy else default)
            for n in range(1, count + 1)
        ]
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def level_of(self, item: WorkItem) -> int:
        """Triton's rule: priority 0 or beyond the configured levels means the default level."""
        p = item.priority
        return p if 1 <= p <= len(self._levels) else self.default_level

    def push(self, item: WorkItem, now_ns: int) -> None:
        """Enqueue at the back of the item's level; a full level refuses with UNAVAILABLE."""
        level_no = self.level_of(item)
        level = self._levels[level_no - 1]
        limit = level.policy.max_queue_size
        if limit and len(level) >= limit:
            raise unavailable(f"request refused: the queue of priority level {level_no} is full "
                              f"(max_queue_size {limit})")
        item.queue_start_ns = now_ns
        deadline = level.policy.deadline(item, now_ns)
        padding = self._padding
        if padding is None:
            level.ready.append(Entry(item, item.shape_key(), deadline))
        else:
            level.ready.append(Entry(item, padding.shape_key(item), deadline, padding.length(item)))
        level.timed += 1 if deadline else 0
        self._size += 1

    def remove(self, item: WorkItem) -> bool:
        """Drop a queued item (its client went away); False when it is no longer queued."""
        level = self._levels[self.level_of(item) - 1]
        for queue in (level.ready, level.delayed):
            for entry in queue:
                if entry.item is item:
                    queue.remove(entry)
                    self._forget(level, entry, queue is level.ready)
                    return True
        return False

    def expire(self, now_ns: int) -> list[tuple[WorkItem, ServingError]]:
        """Apply queue timeouts; returns the REJECTed items with the error each must be answered with."""
        rejected: list[tuple[WorkItem, ServingError]] = []
        for level in self._levels:
            if not level.timed:
                continue
            keep: deque[Entry] = deque()
            for entry in level.ready:
                if not entry.deadline_ns or entry.deadline_ns > now_ns:
                    keep.append(entry)
                    continue
                level.timed -= 1
                if level.policy.delay_on_timeout:
                    entry.deadline_ns = 0
                    level.delayed.append(entry)
                else:
                    self._size -= 1
                    waited_us = (now_ns - entry.item.queue_start_ns) // 1000
                    rejected.append((entry.item, unavailable(
                        f"request timed out in the queue after {waited_us} us before it could be executed")))
            level.ready = keep
        return rejected

    def ordered(self) -> Iterator[Entry]:
        """Live entries in scheduling order: level 1 first; within a level, ready before delayed, FIFO."""
        for level in self._levels:
            yield from level.ready
            yield from level.delayed

    def take(self, entries: list[Entry]) -> None:
        """Remove entries chosen for a batch (or found cancelled)."""
        for entry in entries:
            level = self._levels[self.level_of(entry.item) - 1]
            if level.ready and level.ready[0] is entry:
                level.ready.popleft()
                self._forget(level, entry, True)
            elif level.delayed and level.delayed[0] is entry:
                level.delayed.popleft()
                self._forget(level, entry, False)
            else:
                in_ready = entry in level.ready
                (level.ready if in_ready else level.delayed).remove(entry)
                self._forget(level, entry, in_ready)

    def _forget(self, level: _Level, entry: Entry, was_ready: bool) -> None:
        self._size -= 1
        if was_ready and entry.deadline_ns:
            level.timed -= 1
