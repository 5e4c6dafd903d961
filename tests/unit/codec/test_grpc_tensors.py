"""The gRPC tensor codec: every datatype round-trips bit-exactly, typed contents decode, malformed input is refused."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from tritonclient.grpc import InferInput
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import np_to_triton_dtype

from server.codec.grpc_tensors import (
    decode_infer_request,
    encode_infer_request,
    encode_infer_response,
    param_value,
    set_params,
)
from server.errors import ErrorKind, ServingError
from server.types import DATATYPES, InferRequest, InferResponse, InferTensor, RequestedOutput, to_numpy, to_torch

RNG = np.random.default_rng(7)


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Random values spanning each dtype's range (incl. negative zero and extremes for floats)."""
    dtype = DATATYPES[datatype][0]
    if datatype == "BOOL":
        return RNG.integers(0, 2, shape).astype(np.bool_)
    if datatype == "BF16":
        return RNG.integers(0, 2**16, shape, dtype=np.uint16)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        values.flat[0] = info.min
        values.flat[-1] = info.max
        return values
    values = RNG.normal(size=shape).astype(dtype)
    values.flat[0] = -0.0
    values.flat[-1] = np.finfo(dtype).max
    return values


def wire(inputs: list[tuple[str, str, list[int]]], raw: list[bytes] | None = None) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape in inputs:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.extend(raw or [])
    return message


def refused(message: pb.ModelInferRequest, kind: ErrorKind = ErrorKind.INVALID_ARGUMENT) -> str:
    with pytest.raises(ServingError) as info:
        decode_infer_request(message)
    assert info.value.kind == kind
    return info.value.message


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_round_trips_bit_exactly(datatype: str) -> None:
    data = sample(datatype, (3, 5))
    request = InferRequest("m", "2", [InferTensor("X", datatype, (3, 5), data)], id="req-1",
                           outputs=[RequestedOutput("Y", {"binary_data": True})], parameters={"priority": 2})
    decoded = decode_infer_request(pb.ModelInferRequest.FromString(encode_infer_request(request)
                                                                    .SerializeToString()))
    (tensor,) = decoded.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("X", datatype, (3, 5))
    assert tensor.data.dtype == data.dtype and tensor.data.tobytes() == data.tobytes()
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "2", "req-1")
    assert decoded.parameters == {"priority": 2}
    assert decoded.outputs[0].name == "Y" and decoded.outputs[0].parameters == {"binary_data": True}

    response = InferResponse("m", "2", [InferTensor("Y", datatype, (3, 5), data)], id="req-1")
    message = pb.ModelInferResponse.FromString(encode_infer_response(response).SerializeToString())
    assert (message.model_name, message.model_version, message.id) == ("m", "2", "req-1")
    assert message.outputs[0].datatype == datatype and list(message.outputs[0].shape) == [3, 5]
    assert message.raw_output_contents[0] == data.tobytes()


def test_bf16_matches_tritonclient_serialisation_and_torch() -> None:
    """BF16 travels as the raw 2-byte words tritonclient's InferInput writes; decoding gives torch the same bfloat16
    values."""
    values = np.array([[1.5, -2.25, 0.0], [1.0e38, -1.0e-3, 7.0]], dtype=ml_dtypes.bfloat16)
    raw = InferInput("D", [2, 3], "BF16").set_data_from_numpy(values)._get_content()
    decoded = decode_infer_request(wire([("D", "BF16", [2, 3])], [raw])).inputs[0]
    tensor = to_torch(decoded.data, "BF16")
    expected = torch.tensor(values.astype(np.float32)).to(torch.bfloat16)
    assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, expected)
    array, datatype = to_numpy(tensor * 2)
    response = encode_infer_response(InferResponse("m", "1", [InferTensor("D", datatype, array.shape, array)]))
    back = np.frombuffer(response.raw_output_contents[0], dtype=ml_dtypes.bfloat16).reshape(2, 3)
    assert np.array_equal(back.astype(np.float32), values.astype(np.float32) * 2)


def test_raw_decoding_views_the_received_buffer() -> None:
    raw = np.arange(6, dtype=np.float32).tobytes()
    message = wire([("X", "FP32", [2, 3])], [raw])
    data = decode_infer_request(message).inputs[0].data
    assert data.base is not None and not data.flags.owndata
    assert np_to_triton_dtype(data.dtype) == "FP32" and data.tolist() == [[0, 1, 2], [3, 4, 5]]


TYPED_CASES = [
    ("BOOL", "bool_contents", [True, False, True, True]),
    ("INT8", "int_contents", [-128, 0, 5, 127]),
    ("INT16", "int_contents", [-32768, 0, 5, 32767]),
    ("INT32", "int_contents", [-2**31, 0, 5, 2**31 - 1]),
    ("INT64", "int64_contents", [-2**63, 0, 5, 2**63 - 1]),
    ("UINT8", "uint_contents", [0, 1, 200, 255]),
    ("UINT16", "uint_contents", [0, 1, 200, 65535]),
    ("UINT32", "uint_contents", [0, 1, 200, 2**32 - 1]),
    ("UINT64", "uint64_contents", [0, 1, 200, 2**64 - 1]),
    ("FP32", "fp32_contents", [0.5, -1.25, 3.0, -0.0]),
    ("FP64", "fp64_contents", [0.1, -1e300, 3.0, 2.5]),
]


@pytest.mark.parametrize("datatype,field,values", TYPED_CASES)
def test_typed_contents_decode_to_the_wire_dtype(datatype: str, field: str, values: list) -> None:
    message = wire([("X", datatype, [2, 2])])
    getattr(message.inputs[0].contents, field).extend(values)
    data = decode_infer_request(message).inputs[0].data
    assert data.dtype == DATATYPES[datatype][0] and data.shape == (2, 2)
    assert np.array_equal(data, np.array(values, dtype=DATATYPES[datatype][0]).reshape(2, 2))


@pytest.mark.parametrize("datatype,field,value", [("INT8", "int_contents", 128), ("INT16", "int_contents", -40000),
                                                  ("UINT8", "uint_contents", 256),
                                                  ("UINT16", "uint_contents", 70000)])
def test_typed_values_out_of_range_are_refused(datatype: str, field: str, value: int) -> None:
    message = wire([("X", datatype, [1])])
    getattr(message.inputs[0].contents, field).append(value)
    assert "does not fit" in refused(message)


def test_params_convert_to_python_values_and_back() -> None:
    message = pb.ModelInferRequest()
    set_params(message.parameters, {"b": True, "i": -3, "u": 2**64 - 1, "d": 0.5, "s": "x"})
    assert {k: param_value(v) for k, v in message.parameters.items()} == \
        {"b": True, "i": -3, "u": 2**64 - 1, "d": 0.5, "s": "x"}
    message.parameters["priority"].uint64_param = 3  # what tritonclient sends
    message.parameters["timeout"].int64_param = 1000
    decoded = decode_infer_request(message)
    assert decoded.parameters["priority"] == 3 and decoded.parameters["timeout"] == 1000


def test_zero_element_tensor_needs_no_data() -> None:
    data = decode_infer_request(wire([("X", "FP32", [0, 4])])).inputs[0].data
    assert data.shape == (0, 4)


# -- malformed requests: each refused with INVALID_ARGUMENT and a message naming the cause -------------------
def test_raw_size_must_match_shape() -> None:
    message = refused(wire([("X", "FP32", [2, 3])], [b"\0" * 20]))
    assert "'X'" in message and "24 bytes" in message and "20" in message


def test_huge_shape_is_refused_before_any_allocation() -> None:
    message = refused(wire([("X", "FP32", [2**40, 2**40])], [b"\0" * 16]), ErrorKind.TOO_LARGE)
    assert str(2**80) in message and "limit" in message


def test_empty_tensor_with_overflowing_dims_is_refused_not_crashed() -> None:
    # 0 elements, but numpy cannot even describe the shape: must be a client error, never INTERNAL
    message = refused(wire([("X", "FP32", [2**62, 2**62, 0])], [b""]), ErrorKind.TOO_LARGE)
    assert "limit" in message
    decoded = decode_infer_request(wire([("X", "FP32", [0, 4])], [b""]), max_elements=16)
    assert decoded.inputs[0].data.shape == (0, 4)


def test_negative_dimension_is_refused() -> None:
    assert "negative" in refused(wire([("X", "FP32", [-1, 4])], [b""]))


def test_too_many_dimensions_are_refused() -> None:
    assert "dimensions" in refused(wire([("X", "FP32", [1] * 40)], [b"\0" * 4]))


def test_raw_count_must_match_input_count() -> None:
    message = refused(wire([("X", "FP32", [1]), ("Y", "FP32", [1])], [b"\0" * 4]))
    assert "1 raw_input_contents for 2 inputs" in message


def test_raw_and_typed_contents_cannot_be_mixed() -> None:
    message = wire([("X", "FP32", [1]), ("Y", "FP32", [1])], [b"\0" * 4, b"\0" * 4])
    message.inputs[1].contents.fp32_contents.append(1.0)
    assert "both typed contents and raw_input_contents" in refused(message)


def test_bytes_raw_contents_decode_to_an_object_array() -> None:
    decoded = decode_infer_request(wire([("S", "BYTES", [1])], [b"\x01\0\0\0a"])).inputs[0].data
    assert decoded.dtype == object and decoded.tolist() == [b"a"]


def test_unknown_datatype_is_refused() -> None:
    assert "unknown datatype 'FP8'" in refused(wire([("X", "FP8", [1])], [b"\0"]))


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_types_only_as_raw(datatype: str) -> None:
    message = wire([("X", datatype, [1])])
    message.inputs[0].contents.fp32_contents.append(1.0)
    assert "only be sent in raw_input_contents" in refused(message)


def test_typed_contents_in_the_wrong_field_are_refused() -> None:
    message = wire([("X", "INT32", [1])])
    message.inputs[0].contents.fp32_contents.append(1.0)
    assert "contents.int_contents, not contents.fp32_contents" in refused(message)


def test_typed_count_must_match_shape() -> None:
    message = wire([("X", "FP32", [2, 2])])
    message.inputs[0].contents.fp32_contents.extend([1.0, 2.0, 3.0])
    assert "4 elements but contents.fp32_contents has 3" in refused(message)


def test_input_without_data_is_refused() -> None:
    assert "carries no data" in refused(wire([("X", "FP32", [2])]))


def test_bool_bytes_other_than_zero_or_one_are_refused() -> None:
    assert "0 or 1" in refused(wire([("C", "BOOL", [2])], [b"\x01\x07"]))


def test_shared_memory_inputs_are_unimplemented() -> None:
    message = wire([("X", "FP32", [1])])
    message.inputs[0].parameters["shared_memory_region"].string_param = "region0"
    assert "shared memory" in refused(message, ErrorKind.UNIMPLEMENTED)
