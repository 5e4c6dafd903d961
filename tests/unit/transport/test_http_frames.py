"""HTTP_CALL / HTTP_REPLY payloads (server/transport/http_frames.py), read from a real buffered stream."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from server.errors import ErrorKind, ServingError
from server.transport.grpc_frames import HEADER, HTTP_REPLY
from server.transport.http_body import ALIGNMENT, BodyTimeout
from server.transport.http_frames import ABSENT, PREFIX, REPLY_PREFIX, decode, error_frame, ok_frame, read_http_call
from server.types import InferResponse, InferTensor


def call_payload(model: str, version: str, header_length: str | None, body: bytes) -> bytes:
    texts = model.encode() + version.encode() + (header_length or "").encode()
    sizes = PREFIX.pack(len(model), len(version), ABSENT if header_length is None else len(header_length))
    return sizes + texts + body


def stream(data: bytes, tail: bytes = b"next frame") -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(data + tail), buffer_size=16)  # small: reads cross buffer refills


def test_a_binary_call_lands_aligned_and_decodes_like_the_uvicorn_route() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 4],
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    payload = call_payload("mlp", "3", str(len(header)), header + x.tobytes())
    reader = stream(payload)
    call = read_http_call(reader, len(payload))
    assert call is not None and (call.model, call.version, call.header_length) == ("mlp", "3", str(len(header)))
    assert reader.read() == b"next frame"  # exactly the payload was consumed
    address = np.frombuffer(call.body, np.uint8).ctypes.data
    assert (address + len(header)) % ALIGNMENT == 0 and not call.body.readonly
    request = decode(call, max_elements=1 << 20)
    assert (request.model_name, request.model_version) == ("mlp", "3")
    np.testing.assert_array_equal(np.asarray(request.inputs[0].data), x)


def test_a_json_call_without_a_header_length() -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}).encode()
    payload = call_payload("m", "", None, body)
    call = read_http_call(stream(payload), len(payload))
    assert call is not None and call.header_length is None and call.version == ""
    assert bytes(call.body) == body


@pytest.mark.parametrize("cut", [1, PREFIX.size + 2, 30])
def test_a_stream_that_ends_inside_a_call_is_none(cut: int) -> None:
    payload = call_payload("model", "1", None, b"x" * 40)
    assert read_http_call(stream(payload[:cut], tail=b""), len(payload)) is None


def test_a_prefix_longer_than_its_frame_breaks_the_connection() -> None:
    payload = call_payload("model", "1", None, b"")
    with pytest.raises(ConnectionError, match="shorter than its own prefix"):
        read_http_call(stream(payload), 4)


def unpack_reply(frame: bytes) -> tuple[int, int, int, bytes]:
    length, call_id, kind, _ = HEADER.unpack(frame[:HEADER.size])
    assert kind == HTTP_REPLY and call_id == 5 and length == len(frame) - HEADER.size
    status, flags, header_length = REPLY_PREFIX.unpack(frame[HEADER.size:HEADER.size + REPLY_PREFIX.size])
    return status, flags, header_length, frame[HEADER.size + REPLY_PREFIX.size:]


def test_replies_carry_the_status_labels_and_body_the_uvicorn_route_sends() -> None:
    out = np.array([[1.5, -2.0]], np.float32)
    response = InferResponse("mlp", "1", [InferTensor("OUTPUT0", "FP32", (1, 2), out)])
    status, flags, header_length, body = unpack_reply(ok_frame(5, response, binary_output=True))
    assert (status, flags) == (200, 2) and body[header_length:] == out.tobytes()
    assert json.loads(body[:header_length])["outputs"][0]["parameters"] == {"binary_data_size": 8}
    status, flags, _, body = unpack_reply(ok_frame(5, response, binary_output=False))
    assert (status, flags) == (200, 0) and json.loads(body)["outputs"][0]["data"] == [1.5, -2.0]


@pytest.mark.parametrize(("error", "status", "flags"), [
    (ServingError(ErrorKind.NOT_FOUND, "unknown model 'x'"), 404, 0),
    (ServingError(ErrorKind.UNAVAILABLE, "queue full"), 503, 0),
    (BodyTimeout(1.0), 408, 1),  # its connection closes
    (RuntimeError("boom"), 500, 0),
])
def test_errors_take_the_status_of_the_one_error_table(error: Exception, status: int, flags: int) -> None:
    got_status, got_flags, _, body = unpack_reply(error_frame(5, error))
    assert (got_status, got_flags) == (status, flags)
    assert isinstance(json.loads(body)["error"], str)


def test_prefixes_are_little_endian() -> None:
    assert PREFIX.pack(1, 2, ABSENT) == struct.pack("<HHH", 1, 2, 0xFFFF)
