"""The stream pump on its own: replies go out as requests finish (not in order), except for models that preserve
ordering, whose replies keep their requests' order; errors are answered in-stream with the request's id, a slow
reader stops the server from reading more, and closing the stream cancels work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from tritonclient.grpc import service_pb2 as pb

from server.errors import ErrorKind, ServingError
from server.transport.grpc_stream import stream_infer

LOG = logging.getLogger("test.grpc_stream")


def request(i: int, model: str = "m") -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name=model, id=f"r{i}")


class Gates:
    """An infer function whose requests finish when the test says so; records what was started and cancelled."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def infer(self, req: pb.ModelInferRequest) -> pb.ModelInferResponse:
        self.started.append(req.id)
        if req.model_name == "bad":
            raise ServingError(ErrorKind.NOT_FOUND, f"unknown model: {req.model_name!r}")
        if req.model_name == "bug":
            raise ZeroDivisionError("boom")
        try:
            await self.events.setdefault(req.id, asyncio.Event()).wait()
        except asyncio.CancelledError:
            self.cancelled.append(req.id)
            raise
        return pb.ModelInferResponse(model_name=req.model_name, id=req.id)

    def release(self, rid: str) -> None:
        self.events.setdefault(rid, asyncio.Event()).set()


async def feed(items: list[pb.ModelInferRequest], consumed: list[str], close: asyncio.Event | None = None
               ) -> AsyncIterator[pb.ModelInferRequest]:
    for item in items:
        consumed.append(item.id)
        yield item
    if close is not None:
        await close.wait()


async def until(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


def test_replies_in_completion_order_and_errors_in_stream() -> None:
    async def scenario() -> None:
        gates, consumed = Gates(), []
        items = [request(0), request(1, "bad"), request(2), request(3, "bug")]
        replies = stream_infer(gates.infer, feed(items, consumed), LOG)
        first = await replies.__anext__()  # the errors do not wait for r0 / r2
        second = await replies.__anext__()
        by_id = {first.infer_response.id: first, second.infer_response.id: second}
        assert "unknown model: 'bad'" in by_id["r1"].error_message
        assert "internal error: ZeroDivisionError: boom" in by_id["r3"].error_message
        gates.release("r2")
        assert (await replies.__anext__()).infer_response.id == "r2"
        gates.release("r0")
        third = await replies.__anext__()
        assert third.infer_response.id == "r0" and not third.error_message
        with pytest.raises(StopAsyncIteration):
            await replies.__anext__()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_window_stops_reading_until_replies_are_taken() -> None:
    async def scenario() -> None:
        gates, consumed = Gates(), []
        replies = stream_infer(gates.infer, feed([request(i) for i in range(6)], consumed), LOG, window=2)
        pending = asyncio.ensure_future(replies.__anext__())
        await until(lambda: len(gates.started) == 2)
        await asyncio.sleep(0.05)
        assert gates.started == ["r0", "r1"] and len(consumed) <= 3  # the reader holds at most one extra item
        gates.release("r1")
        assert (await pending).infer_response.id == "r1"
        await asyncio.sleep(0.05)
        assert len(gates.started) == 2  # the slot frees only once grpc asks for the next reply (r1 was sent)
        following = asyncio.ensure_future(replies.__anext__())
        await until(lambda: len(gates.started) == 3)
        for i in range(6):
            gates.release(f"r{i}")
        rest = [(await following).infer_response.id] + [r.infer_response.id async for r in replies]
        assert sorted(rest) == ["r0", "r2", "r3", "r4", "r5"]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_closing_the_stream_cancels_requests_in_flight() -> None:
    async def scenario() -> None:
        gates, consumed, never = Gates(), [], asyncio.Event()
        replies = stream_infer(gates.infer, feed([request(0), request(1)], consumed, never), LOG)
        pending = asyncio.ensure_future(replies.__anext__())
        await until(lambda: len(gates.started) == 2)
        pending.cancel()  # what grpc.aio does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await pending
        await until(lambda: sorted(gates.cancelled) == ["r0", "r1"])

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_preserve_ordering_model_answers_in_request_order_and_others_do_not_wait() -> None:
    async def scenario() -> None:
        gates, consumed = Gates(), []
        items = [request(0, "ord"), request(1, "ord"), request(2, "free"), request(3, "ord"), request(4, "bad")]
        replies = stream_infer(gates.infer, feed(items, consumed), LOG,
                               ordered=lambda r: r.model_name in ("ord", "bad"))
        first = asyncio.ensure_future(replies.__anext__())  # the generator starts reading on first demand
        await until(lambda: len(gates.started) == 5)
        # the order is per model: r4 ("bad", ordered too) is the first of its model and fails at once
        assert "unknown model" in (await first).error_message
        gates.release("r3")
        gates.release("r1")
        gates.release("r2")
        assert (await replies.__anext__()).infer_response.id == "r2"  # "free" is not ordered: it never waits
        pending = asyncio.ensure_future(replies.__anext__())
        await asyncio.sleep(0.05)
        assert not pending.done()  # r1 and r3 are finished, but r0 is not: nothing of "ord" may leave yet
        gates.release("r0")
        rest = [(await pending).infer_response.id] + [r.infer_response.id async for r in replies]
        assert rest == ["r0", "r1", "r3"]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_an_ordered_request_cancelled_in_flight_does_not_block_its_successors() -> None:
    async def scenario() -> None:
        gates, consumed, never = Gates(), [], asyncio.Event()
        replies = stream_infer(gates.infer, feed([request(0), request(1)], consumed, never), LOG,
                               ordered=lambda r: True)
        pending = asyncio.ensure_future(replies.__anext__())
        await until(lambda: len(gates.started) == 2)
        gates.release("r1")  # r1 is done and waits for r0
        pending.cancel()  # the client goes away: both tasks end, none waits forever
        with pytest.raises(asyncio.CancelledError):
            await pending
        await until(lambda: gates.cancelled == ["r0"])

    asyncio.run(asyncio.wait_for(scenario(), 10))
