"""The server side of the front-process hot path (server/transport/grpc_fastpath.py) on a real Unix socket.

The servicer is a stand-in with the one method the fast path calls (`infer`); everything between the socket and
it -- framing, decoding, the error table, cancellation, the size limit -- is the real code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2 as pb

from server.errors import ErrorKind, ServingError
from server.transport.grpc_fastpath import FastPath, code_number
from server.transport.grpc_frames import CALL, CANCEL, REPLY, Frame, pack, read_frame

LIMIT = 1000


class StandInServicer:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        if request.model_name == "big":
            return pb.ModelInferResponse(raw_output_contents=[b"x" * (LIMIT + 1)])
        if request.model_name == "missing":
            raise ServingError(ErrorKind.NOT_FOUND, "unknown model: 'missing'")
        if request.model_name == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return pb.ModelInferResponse(model_name=request.model_name)


def call(name: str) -> bytes:
    return pb.ModelInferRequest(model_name=name).SerializeToString()


async def scenario(socket_path: str) -> tuple[list[Frame], bool]:
    servicer = StandInServicer()
    server = await FastPath(servicer, LIMIT).start(socket_path)  # type: ignore[arg-type]
    reader, writer = await asyncio.open_unix_connection(socket_path)
    writer.write(pack(CALL, 1, call("slow")) + pack(CALL, 2, call("big")) + pack(CALL, 3, b"\xff\xff\xff")
                 + pack(CALL, 4, call("missing")))
    replies = [await read_frame(reader, 10 * LIMIT) for _ in range(3)]
    writer.write(pack(CANCEL, 1) + pack(CALL, 5, call("ok")))
    replies.append(await read_frame(reader, 10 * LIMIT))
    cancelled = await asyncio.wait_for(servicer.cancelled.wait(), 5) or servicer.cancelled.is_set()
    writer.close()
    server.close()
    return [r for r in replies if r is not None], cancelled


def test_each_call_gets_its_own_answer_and_a_cancel_drops_the_call(tmp_path: Path) -> None:
    replies, cancelled = asyncio.run(scenario(str(tmp_path / "infer.sock")))
    by_id = {r.call_id: r for r in replies}
    assert all(r.kind == REPLY for r in replies) and set(by_id) == {2, 3, 4, 5}  # none for the cancelled call 1
    assert by_id[2].status == code_number(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert f"exceeds the {LIMIT}-byte gRPC message limit" in by_id[2].payload.decode()
    assert by_id[3].status == code_number(grpc.StatusCode.INVALID_ARGUMENT)
    assert "ModelInfer is not a valid protobuf message" in by_id[3].payload.decode()
    assert by_id[4].status == code_number(grpc.StatusCode.NOT_FOUND)
    assert by_id[4].payload.decode() == "unknown model: 'missing'"
    assert by_id[5].status == 0 and pb.ModelInferResponse.FromString(by_id[5].payload).model_name == "ok"
    assert cancelled
