"""The front-process framing (server/transport/grpc_frames.py) over a real asyncio stream."""

from __future__ import annotations

import asyncio

import pytest

from server.transport.grpc_frames import CALL, CANCEL, HEADER, REPLY, CoalescingWriter, Frame, pack, read_frame


async def read(data: bytes, count: int, limit: int = 1024) -> list[Frame | None]:
    reader = asyncio.StreamReader()  # inside the loop: a StreamReader binds to the running loop
    reader.feed_data(data)
    reader.feed_eof()
    return [await read_frame(reader, limit) for _ in range(count)]


def test_frames_round_trip_in_order() -> None:
    data = pack(CALL, 7, b"request") + pack(CANCEL, 7) + pack(REPLY, 9, b"why", status=3)
    assert asyncio.run(read(data, 4)) == [Frame(CALL, 7, 0, b"request"), Frame(CANCEL, 7, 0, b""),
                                       Frame(REPLY, 9, 3, b"why"), None]


def test_a_frame_cut_short_is_a_broken_connection() -> None:
    data = pack(CALL, 1, b"0123456789")[:-3]
    with pytest.raises(ConnectionError, match="middle of a frame"):
        asyncio.run(read(data, 1))
    with pytest.raises(ConnectionError, match="middle of a frame"):
        asyncio.run(read(data[: HEADER.size - 2], 1))


def test_a_frame_over_the_limit_is_refused_before_reading_it() -> None:
    with pytest.raises(ConnectionError, match="exceeds the 8-byte limit"):
        asyncio.run(read(pack(CALL, 1, b"x" * 9), 1, limit=8))


class RecordingStream:
    """Stands in for the asyncio transport: records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def test_the_frames_of_one_iteration_leave_together_in_order_at_its_end() -> None:
    a, b, c, d = (pack(REPLY, i, bytes([96 + i])) for i in range(1, 5))

    async def scenario() -> list[list[bytes]]:
        stream = RecordingStream()
        writer = CoalescingWriter(stream)  # type: ignore[arg-type]
        seen = []
        writer.write(a)
        writer.write(b)
        writer.write(c)
        seen.append(list(stream.writes))  # nothing is sent inside the iteration
        await asyncio.sleep(0)
        seen.append(list(stream.writes))  # one send as soon as it ends
        writer.write(d)  # a lone frame of a later iteration: sent in the next one, alone
        await asyncio.sleep(0)
        seen.append(list(stream.writes))
        return seen

    assert asyncio.run(scenario()) == [[], [a + b + c], [a + b + c, d]]
