"""The HTTP inference codec against the real tritonclient.http encoder/decoder: every datatype, binary and JSON."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http._utils import _get_inference_request

from server.codec.http_infer import decode_infer_request, encode_infer_response
from server.errors import ErrorKind, ServingError
from server.types import DATATYPES, InferResponse, InferTensor, to_torch

RNG = np.random.default_rng(11)
FIXED = [d for d in DATATYPES]
JSON_OK = [d for d in DATATYPES if d not in ("FP16", "BF16")]
LIMIT = 1 << 20


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Random values over each dtype's range, extremes included, in the wire dtype (BF16 as uint16 words)."""
    dtype = DATATYPES[datatype][0]
    if datatype == "BOOL":
        return RNG.integers(0, 2, shape).astype(np.bool_)
    if datatype == "BF16":
        return RNG.normal(size=shape).astype(ml_dtypes.bfloat16).view(np.uint16)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        values.flat[0], values.flat[-1] = info.min, info.max
        return values
    values = RNG.normal(size=shape).astype(dtype)
    values.flat[0], values.flat[-1] = -0.0, np.finfo(dtype).max
    return values


def client_array(datatype: str, wire: np.ndarray) -> np.ndarray:
    """What a tritonclient user holds for `wire` data (BF16 as ml_dtypes.bfloat16)."""
    return wire.view(ml_dtypes.bfloat16) if datatype == "BF16" else wire


def client_body(inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None,
                **kwargs: object) -> tuple[memoryview, str | None]:
    """A request body exactly as tritonclient.http builds it, in a writable buffer like the server's."""
    body, json_size = _get_inference_request(inputs=inputs, request_id=kwargs.pop("request_id", ""),
                                             outputs=outputs, sequence_id=0, sequence_start=False,
                                             sequence_end=False, priority=kwargs.pop("priority", 0),
                                             timeout=None, custom_parameters=kwargs or None)
    return memoryview(bytearray(body)), None if json_size is None else str(json_size)


def decode(body: memoryview, header: str | None, limit: int = LIMIT):  # type: ignore[no-untyped-def]
    return decode_infer_request(body, header, "m", "", limit)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", FIXED)
def test_request_round_trip(datatype: str, binary: bool) -> None:
    wire = sample(datatype, (3, 5))
    tensor = InferInput("x", [3, 5], datatype)
    if not binary and datatype in ("FP16", "BF16"):
        # tritonclient refuses BF16 as JSON itself; build FP16/BF16 JSON by hand and expect the server to refuse
        doc = b'{"inputs":[{"name":"x","datatype":"%s","shape":[3,5],"data":%s}]}' % (
            datatype.encode(), str(wire.astype(np.float32).tolist()).encode())
        with pytest.raises(ServingError, match="binary") as err:
            decode(memoryview(bytearray(doc)), None)
        assert err.value.kind == ErrorKind.INVALID_ARGUMENT
        return
    tensor.set_data_from_numpy(client_array(datatype, wire), binary_data=binary)
    body, header = client_body([tensor], request_id="r-1", priority=2, custom="yes")
    request = decode(body, header)
    assert request.id == "r-1"
    assert request.parameters["priority"] == 2 and request.parameters["custom"] == "yes"
    (decoded,) = request.inputs
    assert (decoded.name, decoded.datatype, decoded.shape) == ("x", datatype, (3, 5))
    assert decoded.data.dtype == DATATYPES[datatype][0]
    assert decoded.data.tobytes() == wire.tobytes()  # bit-exact, -0.0 and extremes included
    as_torch = to_torch(decoded.data, datatype)
    assert as_torch.dtype == DATATYPES[datatype][1] and tuple(as_torch.shape) == (3, 5)


def test_binary_inputs_view_the_body_without_copying() -> None:
    a = InferInput("a", [4], "FP32").set_data_from_numpy(np.arange(4, dtype=np.float32))
    b = InferInput("b", [2], "INT64").set_data_from_numpy(np.arange(2, dtype=np.int64))
    body, header = client_body([a, b])
    aligned = memoryview(bytearray(64 + len(body)))[(-int(header)) % 64:]  # as http_body places it
    aligned[:len(body)] = body
    request = decode(aligned[:len(body)], header)
    for tensor in request.inputs:
        assert tensor.data.flags.writeable and tensor.data.flags.aligned
        assert np.shares_memory(tensor.data, np.frombuffer(aligned.obj, np.uint8))
        assert to_torch(tensor.data, tensor.datatype).data_ptr() == tensor.data.ctypes.data  # shared with torch


def test_misaligned_binary_input_is_copied_aligned() -> None:
    flag = InferInput("f", [3], "BOOL").set_data_from_numpy(np.array([True, False, True]))
    value = InferInput("v", [2], "FP64").set_data_from_numpy(np.array([1.5, -2.0]))
    body, header = client_body([flag, value])
    request = decode(body, header)
    assert request.inputs[1].data.flags.aligned
    assert request.inputs[1].data.tolist() == [1.5, -2.0]


def test_nested_json_data_is_accepted() -> None:
    doc = b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2,2],"data":[[1,2],[3,4]]}]}'
    (tensor,) = decode(memoryview(bytearray(doc)), None).inputs
    assert tensor.data.tolist() == [[1, 2], [3, 4]] and tensor.data.dtype == np.dtype("<i4")


def test_requested_outputs_keep_their_parameters() -> None:
    x = InferInput("x", [1], "FP32").set_data_from_numpy(np.ones(1, np.float32))
    body, header = client_body([x], [InferRequestedOutput("y", binary_data=False), InferRequestedOutput("z")])
    request = decode(body, header)
    assert [(o.name, o.parameters["binary_data"]) for o in request.outputs] == [("y", False), ("z", True)]


def server_response(datatype: str, wire: np.ndarray, binary: bool | None) -> InferResponse:
    parameters = {} if binary is None else {"binary_data": binary}
    return InferResponse("m", "1", [InferTensor("y", datatype, wire.shape, wire, parameters)], id="abc")


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", FIXED)
def test_response_round_trip_through_tritonclient(datatype: str, binary: bool) -> None:
    wire = sample(datatype, (2, 3))
    response = server_response(datatype, wire, binary)
    if not binary and datatype not in JSON_OK:
        with pytest.raises(ServingError, match="binary_data"):
            encode_infer_response(response, False)
        return
    body, header_length = encode_infer_response(response, False)
    assert (header_length is None) == (not binary)
    result = InferResult.from_response_body(body, header_length=header_length)
    assert result.get_response()["id"] == "abc" and result.get_response()["model_version"] == "1"
    got = result.as_numpy("y")
    assert got.shape == (2, 3)
    expected = client_array(datatype, wire)
    if datatype in ("FP32", "FP64") and not binary:
        np.testing.assert_array_equal(got, expected)  # shortest round-trip repr: exact
    else:
        assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize(("default", "per_output", "binary"),
                         [(True, None, True), (False, None, False), (True, False, False), (False, True, True)])
def test_binary_output_choice(default: bool, per_output: bool | None, binary: bool) -> None:
    body, header_length = encode_infer_response(server_response("INT8", sample("INT8", (4,)), per_output), default)
    assert (header_length is not None) == binary
    output = InferResult.from_response_body(body, header_length=header_length).get_output("y")
    assert ("binary_data_size" in output.get("parameters", {})) == binary
    assert "binary_data" not in output.get("parameters", {})


def test_response_outputs_follow_output_order_with_binary_offsets() -> None:
    a, b = sample("FP32", (2, 2)), sample("UINT16", (3,))
    response = InferResponse("m", "1", [InferTensor("a", "FP32", (2, 2), a, {"binary_data": True}),
                                        InferTensor("b", "UINT16", (3,), b, {"binary_data": True})])
    body, header_length = encode_infer_response(response, False)
    result = InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("a"), a)
    np.testing.assert_array_equal(result.as_numpy("b"), b)


def test_torch_output_through_to_numpy_round_trips_bf16() -> None:
    from server.types import to_numpy

    tensor = torch.randn(2, 4).to(torch.bfloat16)
    wire, datatype = to_numpy(tensor)
    body, header_length = encode_infer_response(server_response(datatype, wire, True), False)
    got = InferResult.from_response_body(body, header_length=header_length).as_numpy("y")
    assert torch.equal(torch.from_numpy(got.view(np.uint16).copy()).view(torch.bfloat16), tensor)
