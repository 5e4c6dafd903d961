"""Property-based fuzzing of BYTES in both codecs, in process: framings (valid, mangled), JSON strings, and gRPC
bytes_contents. As in test_codec_properties.py, decoding either yields exactly what was sent or raises a
ServingError of a client kind; the client side of each valid case is tritonclient's own serialize_byte_tensor.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor

from server.codec import bytes_tensor
from server.codec.grpc_tensors import decode_infer_request as decode_grpc
from server.codec.http_infer import decode_infer_request as decode_http
from tests.hardening.tally import tried
from tests.hardening.test_codec_properties import FUZZ, MAX_ELEMENTS, client_error, json_values

byte_elements = st.lists(st.one_of(st.binary(max_size=12), st.text(max_size=6).map(lambda s: s.encode("utf-8"))),
                         max_size=12)


def object_array(values: list[bytes], rows: int) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(rows, -1) if rows and len(values) % rows == 0 else array


def reframed(tensor_data: np.ndarray) -> bytes:
    return serialize_byte_tensor(tensor_data).item() if tensor_data.size else b""


@FUZZ
@given(values=byte_elements, rows=st.integers(1, 3))
def test_valid_bytes_round_trip_on_http_binary_and_grpc(values: list[bytes], rows: int) -> None:
    """tritonclient's own framing of any elements (empty, NUL, invalid UTF-8) decodes to exactly those bytes."""
    tried("codec: BYTES valid framings")
    array = object_array(values, rows)
    framed = reframed(array)
    header = json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": list(array.shape),
                                     "parameters": {"binary_data_size": len(framed)}}]}).encode()
    over_http = decode_http(memoryview(bytearray(header + framed)), str(len(header)), "m", "", MAX_ELEMENTS)
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[framed])
    message.inputs.add(name="t", datatype="BYTES", shape=list(array.shape))
    over_grpc = decode_grpc(pb.ModelInferRequest.FromString(message.SerializeToString()), MAX_ELEMENTS)
    for decoded in (over_http.inputs[0].data, over_grpc.inputs[0].data):
        assert decoded.dtype == object and decoded.shape == array.shape and decoded.tolist() == array.tolist()


@FUZZ
@given(values=byte_elements, count=st.integers(0, 14), cut=st.integers(-6, 6),
       patch=st.tuples(st.integers(0, 200), st.integers(0, 255)))
def test_mangled_bytes_framing_is_refused_or_means_exactly_the_bytes_sent(
        values: list[bytes], count: int, cut: int, patch: tuple[int, int]) -> None:
    """A shape that lies, a cut or extended body, a patched length prefix: refused by a client error, or decoded
    into elements whose framing is byte for byte the data received (nothing read past it, nothing skipped)."""
    tried("codec: BYTES mangled framings")
    data = bytearray(reframed(object_array(values, 1)))
    data = data[:len(data) + cut] if cut < 0 else data + b"\xff" * cut
    if data and patch[0] < len(data):
        data[patch[0]] = patch[1]
    for decode in (lambda: bytes_tensor.deserialize(bytes(data), count, "t"),
                   lambda: decode_grpc(_raw_bytes_message(bytes(data), count), MAX_ELEMENTS).inputs[0].data):
        error = client_error(decode)
        if error is None:
            decoded = decode()
            assert decoded.size == count and bytes_tensor.serialize(decoded) == bytes(data)


def _raw_bytes_message(data: bytes, count: int) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=[data])
    message.inputs.add(name="t", datatype="BYTES", shape=[count])
    return message


@FUZZ
@given(data=json_values, shape=st.lists(st.integers(0, 4), max_size=3))
def test_json_bytes_data_is_strings_or_refused(data: object, shape: list[int]) -> None:
    """Any JSON as BYTES `data`: an object array of each string's UTF-8 bytes, or a client error; never str(3)."""
    tried("codec: BYTES JSON data")
    body = memoryview(bytearray(json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": shape,
                                                        "data": data}]}).encode()))
    if client_error(lambda: decode_http(body, None, "m", "", MAX_ELEMENTS)) is None:
        decoded = decode_http(body, None, "m", "", MAX_ELEMENTS).inputs[0].data
        flat = np.asarray(data, dtype=object).reshape(-1).tolist()
        assert all(type(v) is str for v in flat)
        assert decoded.shape == tuple(shape) and decoded.reshape(-1).tolist() == [v.encode() for v in flat]


@FUZZ
@given(values=byte_elements, count=st.integers(0, 14))
def test_grpc_bytes_contents_count_must_match(values: list[bytes], count: int) -> None:
    tried("codec: BYTES gRPC bytes_contents")
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="t", datatype="BYTES", shape=[count]).contents.bytes_contents.extend(values)
    error = client_error(lambda: decode_grpc(message, MAX_ELEMENTS))
    assert (error is None) == (count == len(values))
    if error is None:
        assert decode_grpc(message, MAX_ELEMENTS).inputs[0].data.tolist() == values
