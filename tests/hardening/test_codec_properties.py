"""Property-based fuzzing of both codecs, in process: random documents, framings and protobuf messages.

Whatever arrives, decoding either yields tensors that agree with what was sent or raises a ServingError of a
client kind with a message; any other exception (IndexError, ValueError from numpy, RecursionError...) is a bug
that would surface as a 500/INTERNAL.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from server.codec.grpc_tensors import TYPED_FIELDS
from server.codec.grpc_tensors import decode_infer_request as decode_grpc
from server.codec.http_infer import decode_infer_request as decode_http
from server.errors import ErrorKind, ServingError
from server.types import DATATYPES
from tests.hardening.tally import tried

CLIENT_KINDS = {ErrorKind.INVALID_ARGUMENT, ErrorKind.TOO_LARGE, ErrorKind.UNIMPLEMENTED}
MAX_ELEMENTS = 4096
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.sampled_from(["INPUT0", "A", "B", "x", "", "\u00e9\u0000", "../etc"])
datatypes = st.sampled_from([*DATATYPES, "BYTES", "FP8", "fp32", "", "INT128"])
dims = st.one_of(st.integers(-3, 8), st.sampled_from([0, 2**31, 2**62, 10**12, -(2**63)]))
shapes = st.lists(dims, max_size=6)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                                  st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=4)),
                           max_leaves=40)


def client_error(call) -> ServingError | None:  # type: ignore[no-untyped-def]
    """Run a decode; a non-client failure fails the test with the exception itself."""
    try:
        call()
    except ServingError as exc:
        assert exc.kind in CLIENT_KINDS, f"{exc.kind}: {exc.message}"
        assert exc.message and len(exc.message) < 2000
        return exc
    return None


# -- HTTP: JSON documents ---------------------------------------------------------------------------------------
raw_inputs = st.fixed_dictionaries({}, optional={"name": names, "datatype": datatypes, "shape": shapes,
                                                 "data": json_values,
                                                 "parameters": st.dictionaries(
                                                     st.sampled_from(["binary_data_size", "x",
                                                                      "shared_memory_region"]),
                                                     json_scalars, max_size=2)})
documents = st.fixed_dictionaries({}, optional={"inputs": st.one_of(st.lists(raw_inputs, max_size=3), json_values),
                                                "outputs": json_values, "id": json_scalars,
                                                "parameters": st.one_of(st.dictionaries(
                                                    st.sampled_from(["binary_data_output", "priority", "timeout"]),
                                                    json_scalars), json_values)})


@FUZZ
@given(document=documents)
def test_random_json_documents_are_decoded_or_refused(document: dict) -> None:
    tried("codec: HTTP JSON documents")
    body = memoryview(bytearray(json.dumps(document).encode()))
    client_error(lambda: decode_http(body, None, "m", "", MAX_ELEMENTS))


@FUZZ
@given(body=st.binary(max_size=300), header=st.one_of(st.none(), st.integers(-5, 400).map(str),
                                                      st.sampled_from(["", " 7", "\u00b2", "1e3", "9" * 60])))
def test_random_bytes_and_header_lengths_are_decoded_or_refused(body: bytes, header: str | None) -> None:
    tried("codec: HTTP raw bodies with Inference-Header-Content-Length")
    client_error(lambda: decode_http(memoryview(bytearray(body)), header, "m", "", MAX_ELEMENTS))


@st.composite
def valid_tensors(draw: st.DrawFn) -> tuple[str, list[int], np.ndarray]:
    datatype = draw(st.sampled_from(sorted(DATATYPES)))
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    count = int(np.prod(shape))
    raw = draw(st.binary(min_size=count * DATATYPES[datatype][0].itemsize,
                         max_size=count * DATATYPES[datatype][0].itemsize))
    array = np.frombuffer(raw, dtype=DATATYPES[datatype][0]).copy()
    if datatype == "BOOL":
        array = np.frombuffer(raw, dtype=np.uint8) % 2 == 1
    return datatype, shape, array.reshape(shape)


@FUZZ
@given(tensors=st.lists(valid_tensors(), min_size=1, max_size=3), lie=st.integers(-3, 3))
def test_binary_framing_round_trips_exactly_and_lies_are_refused(tensors: list, lie: int) -> None:
    """Valid binary requests decode bit-exactly (NaN and Inf included); a shifted binary_data_size never does."""
    tried("codec: HTTP binary framings")
    inputs = [{"name": f"in{i}", "datatype": dt, "shape": shape,
               "parameters": {"binary_data_size": arr.nbytes + (lie if i == 0 else 0)}}
              for i, (dt, shape, arr) in enumerate(tensors)]
    header = json.dumps({"inputs": inputs}).encode()
    body = memoryview(bytearray(header + b"".join(a.tobytes() for _, _, a in tensors)))
    error = client_error(lambda: decode_http(body, str(len(header)), "m", "", MAX_ELEMENTS))
    if lie:
        assert error is not None, "a lying binary_data_size was accepted"
        return
    assert error is None, error.message
    decoded = decode_http(body, str(len(header)), "m", "", MAX_ELEMENTS)
    for tensor, (dt, shape, arr) in zip(decoded.inputs, tensors, strict=True):
        assert tensor.datatype == dt and list(tensor.shape) == shape
        assert tensor.data.tobytes() == arr.tobytes()


# -- gRPC: ModelInferRequest ------------------------------------------------------------------------------------
@st.composite
def grpc_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=draw(st.text(max_size=8)), model_version=draw(st.text(max_size=3)))
    n = draw(st.integers(0, 3))
    use_raw = draw(st.booleans())
    for _ in range(n):
        tensor = message.inputs.add(name=draw(names), datatype=draw(datatypes),
                                    shape=draw(st.lists(st.one_of(st.integers(-2, 6), st.sampled_from(
                                        [2**40, 2**62, 2**63 - 1, -(2**63)])), max_size=5)))
        for key in draw(st.lists(st.sampled_from(["binary_data_size", "shared_memory_region", "p"]), max_size=2)):
            tensor.parameters[key].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
        if use_raw:
            message.raw_input_contents.append(draw(st.binary(max_size=64)))
        else:
            field = draw(st.sampled_from(sorted({f for f, _ in TYPED_FIELDS.values()})))
            values = draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12))
            if field == "bool_contents":
                getattr(tensor.contents, field).extend(bool(v % 2) for v in values)
            elif field.startswith("fp"):
                getattr(tensor.contents, field).extend(float(v) for v in values)
            elif field.startswith("uint"):
                getattr(tensor.contents, field).extend(abs(v) for v in values)
            else:
                getattr(tensor.contents, field).extend(values)
    if use_raw and draw(st.booleans()):
        message.raw_input_contents.append(b"extra")
    for key in draw(st.lists(st.sampled_from(["priority", "timeout", "binary_data_output"]), max_size=2)):
        message.parameters[key].string_param = draw(st.text(max_size=4))
    return message


@FUZZ
@given(message=grpc_requests())
def test_random_model_infer_requests_are_decoded_or_refused(message: pb.ModelInferRequest) -> None:
    tried("codec: gRPC ModelInferRequest messages")
    client_error(lambda: decode_grpc(message, MAX_ELEMENTS))


@FUZZ
@given(tensors=st.lists(valid_tensors(), min_size=1, max_size=3))
def test_valid_raw_grpc_tensors_round_trip_exactly(tensors: list) -> None:
    tried("codec: gRPC valid raw tensors")
    message = pb.ModelInferRequest(model_name="m")
    for i, (dt, shape, arr) in enumerate(tensors):
        message.inputs.add(name=f"in{i}", datatype=dt, shape=shape)
        message.raw_input_contents.append(arr.tobytes())
    wire = pb.ModelInferRequest.FromString(message.SerializeToString())
    decoded = decode_grpc(wire, MAX_ELEMENTS)
    for tensor, (dt, shape, arr) in zip(decoded.inputs, tensors, strict=True):
        assert tensor.datatype == dt and list(tensor.shape) == shape
        assert tensor.data.tobytes() == arr.tobytes()


@pytest.mark.parametrize("depth", [10, 63, 65, 200, 1000, 5000])
def test_deeply_nested_json_data_is_a_client_error(depth: int) -> None:
    tried("codec: deeply nested JSON data")
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":' + b"[" * depth + b"1" + \
        b"]" * depth + b"}]}"
    error = client_error(lambda: decode_http(memoryview(bytearray(body)), None, "m", "", MAX_ELEMENTS))
    if depth <= 63:  # nested data is allowed (the spec says so) as far as numpy can describe it
        assert error is None and decode_http(memoryview(bytearray(body)), None, "m", "", MAX_ELEMENTS) \
            .inputs[0].data.tolist() == [1.0]
    else:
        assert error is not None and ("JSON" in error.message or "data" in error.message)

