"""ModelStreamInfer: each request of a bidirectional stream runs as its own task; answers go out as they finish.

Running the requests concurrently lets the dynamic batcher merge requests of one stream (that is how
perf_analyzer's streaming mode drives a server). For a model whose config sets `dynamic_batching {
preserve_ordering: true }` (Triton's flag), that model's answers leave in the order its requests arrived on the
stream, whatever order priorities, timeouts or several instances finish them in: a finished answer waits for
its predecessor's. A unary RPC has one answer, so ordering only means something on a stream.

A request that fails is answered with `error_message` (and its id, so the client can match it) and the stream
carries on; only the client closing the stream, or the server stopping, ends it. When the stream ends early,
every request still running is cancelled, which drops its queued work in the batcher. At most `window` requests
per stream are unanswered or unsent at a time: beyond that the server stops reading, so HTTP/2 flow control
pushes back on a client that sends faster than it reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from tritonclient.grpc import service_pb2 as pb

from server.errors import ServingError, as_serving_error

InferFn = Callable[[pb.ModelInferRequest], Awaitable[pb.ModelInferResponse]]
OrderedFn = Callable[[pb.ModelInferRequest], bool]  # does this request's model preserve response order?
_DONE = None  # sentinel in the outbox: the reader finished and every request was answered
WINDOW = 256  # requests of one stream in flight or answered-but-unsent; the batcher's queue bounds the rest


def error_reply(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    """A per-message error that still names the request it answers."""
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                             id=request.id),
    )


@dataclass(slots=True)
class Turn:
    """A place in one model's answer order: post after `after` (the predecessor's) is done, then mark `mine`."""

    after: asyncio.Future[None] | None
    mine: asyncio.Future[None]


async def _answer(infer: InferFn, request: pb.ModelInferRequest, outbox: asyncio.Queue,
                  log: logging.Logger, turn: Turn | None = None) -> None:
    try:
        try:
            reply = pb.ModelStreamInferResponse(infer_response=await infer(request))
        except Exception as exc:  # one bad message must never end the stream
            if not isinstance(exc, ServingError):  # ours were logged where they arose
                log.exception("gRPC stream request to %s failed", request.model_name)
            reply = error_reply(request, as_serving_error(exc).message)
        if turn is not None and turn.after is not None:
            await turn.after
        outbox.put_nowait(reply)
    finally:  # also when cancelled: a successor must never wait for an answer that will not come
        if turn is not None and not turn.mine.done():
            turn.mine.set_result(None)


async def _read(infer: InferFn, requests: AsyncIterator[pb.ModelInferRequest], outbox: asyncio.Queue,
                running: set[asyncio.Task[None]], slots: asyncio.Semaphore, log: logging.Logger,
                ordered: OrderedFn | None) -> None:
    """Start a task per incoming request; when the client half-closes, wait for them and post the sentinel."""
    last: dict[str, asyncio.Future[None]] = {}  # per ordered model: the latest request's turn
    loop = asyncio.get_running_loop()
    try:
        async for request in requests:
            await slots.acquire()  # released when the reply has been handed to grpc
            turn = None
            if ordered is not None and ordered(request):
                turn = Turn(last.get(request.model_name), loop.create_future())
                last[request.model_name] = turn.mine
            task = asyncio.create_task(_answer(infer, request, outbox, log, turn))
            running.add(task)
            task.add_done_callback(running.discard)
        while running:
            await asyncio.gather(*list(running), return_exceptions=True)
    finally:
        outbox.put_nowait(_DONE)


async def stream_infer(infer: InferFn, requests: AsyncIterator[pb.ModelInferRequest], log: logging.Logger,
                       window: int = WINDOW, ordered: OrderedFn | None = None
                       ) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """The response side of one stream (grpc.aio iterates it; cancelling it cancels every request in flight).

    `ordered(request)` says whether that request's model preserves response order (None: no model does)."""
    outbox: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
    running: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(window)
    reader = asyncio.create_task(_read(infer, requests, outbox, running, slots, log, ordered))
    try:
        while (reply := await outbox.get()) is not _DONE:
            yield reply
            slots.release()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            log.warning("gRPC stream closed by a read error: %s", reader.exception())
    finally:
        for task in [reader, *running]:
            task.cancel()
