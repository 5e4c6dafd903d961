"""Priority levels and queue policies of PriorityQueue (pure, on the loop's thread only)."""

import asyncio

import pytest

from server.batching.queue import PriorityQueue
from server.errors import ErrorKind, ServingError
from tests.unit.batching.conftest import item, make_config


def build(batching: str) -> PriorityQueue:
    return PriorityQueue(make_config(batching).dynamic_batching)


def order(queue: PriorityQueue) -> list[float]:
    return [e.item.inputs["x"][0, 0].item() for e in queue.ordered()]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_levels_are_served_highest_first_and_fifo_within_a_level() -> None:
    async def main() -> None:
        q = build("priority_levels: 3 default_priority_level: 2")
        for tag, prio in [(1, 3), (2, 0), (3, 1), (4, 2), (5, 9), (6, 1)]:
            q.push(item(tag, priority=prio), 0)
        # 0 and out-of-range priorities fall back to the default level 2, as in Triton
        assert order(q) == [3, 6, 2, 4, 5, 1]
        assert len(q) == 6

    run(main())


def test_a_full_level_rejects_at_once_with_unavailable() -> None:
    async def main() -> None:
        q = build("priority_levels: 2 default_priority_level: 2 default_queue_policy { max_queue_size: 2 } "
                  "priority_queue_policy { key: 1 value { max_queue_size: 1 } }")
        q.push(item(1), 0)
        q.push(item(2), 0)
        with pytest.raises(ServingError) as err:
            q.push(item(3), 0)
        assert err.value.kind == ErrorKind.UNAVAILABLE and "queue of priority level 2 is full" in err.value.message
        q.push(item(4, priority=1), 0)  # level 1 has its own limit
        with pytest.raises(ServingError, match="max_queue_size 1"):
            q.push(item(5, priority=1), 0)
        assert len(q) == 3

    run(main())


def test_timeout_reject_answers_unavailable_and_leaves_the_rest() -> None:
    async def main() -> None:
        q = build("default_queue_policy { default_timeout_microseconds: 100 }")
        q.push(item(1), 0)
        q.push(item(2), 50_000)
        assert q.expire(99_999) == []
        rejected = q.expire(100_000)
        assert [i.inputs["x"][0, 0].item() for i, _ in rejected] == [1]
        assert rejected[0][1].kind == ErrorKind.UNAVAILABLE and "timed out in the queue" in rejected[0][1].message
        assert order(q) == [2] and len(q) == 1

    run(main())


def test_timeout_delay_moves_the_request_behind_those_still_in_time() -> None:
    async def main() -> None:
        q = build("default_queue_policy { timeout_action: DELAY allow_timeout_override: true }")
        q.push(item(1, timeout_us=10), 0)
        q.push(item(2), 0)
        q.push(item(3, timeout_us=1000), 0)
        assert q.expire(20_000) == []
        assert order(q) == [2, 3, 1] and len(q) == 3
        assert q.expire(10**9) == []
        assert order(q) == [2, 1, 3]  # delayed ones keep their own FIFO order

    run(main())


def test_timeout_override_only_when_allowed_and_never_longer() -> None:
    async def main() -> None:
        fixed = build("default_queue_policy { default_timeout_microseconds: 100 }")
        fixed.push(item(1, timeout_us=5), 0)
        assert fixed.expire(50_000) == []  # override not allowed: the 5 us request timeout is ignored
        allowed = build("default_queue_policy { default_timeout_microseconds: 100 allow_timeout_override: true }")
        allowed.push(item(1, timeout_us=5), 0)
        allowed.push(item(2, timeout_us=500), 0)
        assert len(allowed.expire(5_000)) == 1  # shortened
        assert allowed.expire(99_999) == [] and len(allowed.expire(100_000)) == 1  # not lengthened

    run(main())


def test_remove_and_take_keep_the_count_exact() -> None:
    async def main() -> None:
        q = build("default_queue_policy { default_timeout_microseconds: 100 }")
        items = [item(n) for n in range(4)]
        for i in items:
            q.push(i, 0)
        assert q.remove(items[2]) and not q.remove(items[2])
        entries = list(q.ordered())
        q.take([entries[2], entries[0]])
        assert order(q) == [1] and len(q) == 1
        assert [i.inputs["x"][0, 0].item() for i, _ in q.expire(10**9)] == [1]
        assert len(q) == 0

    run(main())


def test_bad_default_level_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="default_priority_level"):
        build("priority_levels: 2 default_priority_level: 3")



def test_policy_for_a_level_that_does_not_exist_is_a_config_error() -> None:
    two_levels = "priority_levels: 2 default_priority_level: 1 "
    with pytest.raises(ValueError, match=r"priority_queue_policy names priority levels \[3\] outside 1..2"):
        build(two_levels + "priority_queue_policy { key: 3 value { max_queue_size: 1 } }")
    with pytest.raises(ValueError, match=r"levels \[2\] outside 1..1"):  # no priority_levels: one level
        build("priority_queue_policy { key: 2 value { max_queue_size: 1 } }")
    assert len(build(two_levels + "priority_queue_policy { key: 2 value { max_queue_size: 1 } }")) == 0
