"""Every malformed HTTP inference body is refused with a ServingError that names the problem."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from server.codec.http_infer import decode_infer_request
from server.errors import ErrorKind, ServingError

LIMIT = 1000


def tensor(name: str = "x", datatype: str = "FP32", shape: Any = (2,), **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(shape) if isinstance(shape, tuple)
                             else shape}
    entry.update(fields)
    return entry


def json_body(document: Any) -> tuple[memoryview, None]:
    return memoryview(bytearray(json.dumps(document).encode())), None


def binary_body(inputs: list[dict[str, Any]], payload: bytes, header_length: int | str | None = None
                ) -> tuple[memoryview, str]:
    header = json.dumps({"inputs": inputs}).encode()
    length = len(header) if header_length is None else header_length
    return memoryview(bytearray(header + payload)), str(length)


F32x2 = np.array([1.0, 2.0], np.float32).tobytes()

CASES: list[tuple[str, tuple[memoryview, str | None], ErrorKind, str]] = [
    ("not json", (memoryview(bytearray(b"{nope")), None), ErrorKind.INVALID_ARGUMENT, "not valid JSON"),
    ("not utf-8", (memoryview(bytearray(b'{"id": "\xff\xfe"}')), None), ErrorKind.INVALID_ARGUMENT,
     "not valid JSON"),
    ("empty body", (memoryview(bytearray()), None), ErrorKind.INVALID_ARGUMENT, "not valid JSON"),
    ("top-level array", json_body([1, 2]), ErrorKind.INVALID_ARGUMENT, "must be a JSON object"),
    ("inputs missing", json_body({"id": "a"}), ErrorKind.INVALID_ARGUMENT, "'inputs'"),
    ("inputs empty", json_body({"inputs": []}), ErrorKind.INVALID_ARGUMENT, "'inputs'"),
    ("input not object", json_body({"inputs": [3]}), ErrorKind.INVALID_ARGUMENT, "inputs[0] must be"),
    ("name missing", json_body({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}),
     ErrorKind.INVALID_ARGUMENT, "'name'"),
    ("datatype missing", json_body({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}),
     ErrorKind.INVALID_ARGUMENT, "'datatype'"),
    ("unknown datatype", json_body({"inputs": [tensor(datatype="FP8", data=[1, 2])]}), ErrorKind.INVALID_ARGUMENT,
     "unknown datatype 'FP8'"),
    ("bytes as numbers", json_body({"inputs": [tensor(datatype="BYTES", data=["a", 2])]}),
     ErrorKind.INVALID_ARGUMENT, "BYTES data must be JSON strings; element 1 is int"),
    ("bytes ragged", json_body({"inputs": [tensor(datatype="BYTES", shape=(2,), data=[["a", "b"], ["c"]])]}),
     ErrorKind.INVALID_ARGUMENT, "BYTES data must be JSON strings; element 0 is list"),
    ("bytes nested objects", json_body({"inputs": [tensor(datatype="BYTES", shape=(1,), data=[{"a": 1}])]}),
     ErrorKind.INVALID_ARGUMENT, "element 0 is dict"),
    ("bytes count", json_body({"inputs": [tensor(datatype="BYTES", shape=(3,), data=["a", "b"])]}),
     ErrorKind.INVALID_ARGUMENT, "holds 2 elements but the shape needs 3"),
    ("bytes lone surrogate", (memoryview(bytearray(
        b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}')), None),
     ErrorKind.INVALID_ARGUMENT, "not valid JSON: no low surrogate"),  # JSON text cannot carry non-Unicode
    ("bytes prefix past body", binary_body([tensor(datatype="BYTES", shape=(1,),
                                                   parameters={"binary_data_size": 6})], b"\x09\0\0\0ab"),
     ErrorKind.INVALID_ARGUMENT, "BYTES element 0 claims 9 bytes at byte 4, which runs past the end"),
    ("bytes truncated prefix", binary_body([tensor(datatype="BYTES", shape=(2,),
                                                   parameters={"binary_data_size": 8})], b"\x01\0\0\0a\x01\0\0"),
     ErrorKind.INVALID_ARGUMENT, "BYTES element 1: its 4-byte length prefix is truncated"),
    ("bytes trailing", binary_body([tensor(datatype="BYTES", shape=(1,),
                                           parameters={"binary_data_size": 7})], b"\x01\0\0\0abc"),
     ErrorKind.INVALID_ARGUMENT, "2 bytes follow the last of its 1 BYTES elements"),
    ("bytes too few for count", binary_body([tensor(datatype="BYTES", shape=(3,),
                                                    parameters={"binary_data_size": 5})], b"\x01\0\0\0a"),
     ErrorKind.INVALID_ARGUMENT, "holds 3 elements, which need at least 12 bytes"),
    ("bytes size past region", binary_body([tensor(datatype="BYTES", shape=(1,),
                                                   parameters={"binary_data_size": 9})], b"\x01\0\0\0a"),
     ErrorKind.INVALID_ARGUMENT, "holds only 5 bytes"),
    ("shape missing", json_body({"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}),
     ErrorKind.INVALID_ARGUMENT, "'shape' is missing"),
    ("shape not list", json_body({"inputs": [tensor(shape=3, data=[1, 2, 3])]}), ErrorKind.INVALID_ARGUMENT,
     "'shape' must be"),
    ("negative shape", json_body({"inputs": [tensor(shape=(-1, 2), data=[1, 2])]}), ErrorKind.INVALID_ARGUMENT,
     "negative"),
    ("float shape", json_body({"inputs": [tensor(shape=(1.5,), data=[1])]}), ErrorKind.INVALID_ARGUMENT,
     "non-integer"),
    ("bool shape", json_body({"inputs": [tensor(shape=[True], data=[1])]}), ErrorKind.INVALID_ARGUMENT,
     "non-integer"),
    ("huge shape", json_body({"inputs": [tensor(shape=(2**40, 2**40), data=[1])]}), ErrorKind.TOO_LARGE,
     "limit"),
    ("too many elements", json_body({"inputs": [tensor(shape=(LIMIT + 1,), data=[1])]}), ErrorKind.TOO_LARGE,
     "limit is 1000"),
    ("data count", json_body({"inputs": [tensor(shape=(3,), data=[1, 2])]}), ErrorKind.INVALID_ARGUMENT,
     "holds 2 elements but the shape needs 3"),
    ("ragged data", json_body({"inputs": [tensor(shape=(2, 2), data=[[1, 2], [3]])]}), ErrorKind.INVALID_ARGUMENT,
     "not a regular array"),
    ("data not list", json_body({"inputs": [tensor(shape=(1,), data=1.0)]}), ErrorKind.INVALID_ARGUMENT,
     "must be a JSON array"),
    ("strings as floats", json_body({"inputs": [tensor(data=["1.5", "2"])]}), ErrorKind.INVALID_ARGUMENT,
     "JSON numbers"),
    ("floats as ints", json_body({"inputs": [tensor(datatype="INT32", data=[1.5, 2])]}), ErrorKind.INVALID_ARGUMENT,
     "JSON integers"),
    ("out of range", json_body({"inputs": [tensor(datatype="UINT8", data=[1, 300])]}), ErrorKind.INVALID_ARGUMENT,
     "300 is out of range for UINT8"),
    ("negative unsigned", json_body({"inputs": [tensor(datatype="UINT64", data=[-1, 2**64 - 1])]}),
     ErrorKind.INVALID_ARGUMENT, "JSON integers"),
    ("ints as bools", json_body({"inputs": [tensor(datatype="BOOL", data=[1, 0])]}), ErrorKind.INVALID_ARGUMENT,
     "true/false"),
    ("fp16 as json", json_body({"inputs": [tensor(datatype="FP16", data=[1, 0])]}), ErrorKind.INVALID_ARGUMENT,
     "binary tensor data"),
    ("no data", json_body({"inputs": [tensor()]}), ErrorKind.INVALID_ARGUMENT, "neither 'data' nor"),
    ("shared memory", json_body({"inputs": [tensor(parameters={"shared_memory_region": "r"})]}),
     ErrorKind.UNIMPLEMENTED, "shared memory"),
    ("input parameters not object", json_body({"inputs": [tensor(data=[1, 2], parameters=[1])]}),
     ErrorKind.INVALID_ARGUMENT, "'parameters' must be a JSON object"),
    ("request parameters not object", json_body({"inputs": [tensor(data=[1, 2])], "parameters": 4}),
     ErrorKind.INVALID_ARGUMENT, "'parameters' must be a JSON object"),
    ("binary_data_output not bool", json_body({"inputs": [tensor(data=[1, 2])],
                                               "parameters": {"binary_data_output": 1}}),
     ErrorKind.INVALID_ARGUMENT, "'binary_data_output' must be true or false"),
    ("id not string", json_body({"inputs": [tensor(data=[1, 2])], "id": 7}), ErrorKind.INVALID_ARGUMENT, "'id'"),
    ("outputs not list", json_body({"inputs": [tensor(data=[1, 2])], "outputs": {"name": "y"}}),
     ErrorKind.INVALID_ARGUMENT, "'outputs' must be a JSON array"),
    ("output without name", json_body({"inputs": [tensor(data=[1, 2])], "outputs": [{}]}),
     ErrorKind.INVALID_ARGUMENT, "outputs[0]: field 'name'"),
    ("output binary_data not bool", json_body({"inputs": [tensor(data=[1, 2])],
                                               "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}),
     ErrorKind.INVALID_ARGUMENT, "'binary_data' must be true or false"),
    # binary tensor extension
    ("binary without header length", (json_body({"inputs": [tensor(parameters={"binary_data_size": 8})]})[0],
                                      None), ErrorKind.INVALID_ARGUMENT, "no Inference-Header-Content-Length"),
    ("header length beyond body", binary_body([tensor(parameters={"binary_data_size": 8})], F32x2, 10_000),
     ErrorKind.INVALID_ARGUMENT, "exceeds the"),
    ("header length not a number", binary_body([tensor(parameters={"binary_data_size": 8})], F32x2, "12a"),
     ErrorKind.INVALID_ARGUMENT, "non-negative integer"),
    ("header length zero", binary_body([tensor(parameters={"binary_data_size": 8})], F32x2, 0),
     ErrorKind.INVALID_ARGUMENT, "no JSON header"),
    ("header length cuts json", binary_body([tensor(parameters={"binary_data_size": 8})], F32x2, 20),
     ErrorKind.INVALID_ARGUMENT, "not valid JSON"),
    ("negative binary size", binary_body([tensor(parameters={"binary_data_size": -8})], F32x2),
     ErrorKind.INVALID_ARGUMENT, "binary_data_size must be a non-negative integer"),
    ("size vs shape", binary_body([tensor(parameters={"binary_data_size": 4})], F32x2[:4]),
     ErrorKind.INVALID_ARGUMENT, "binary_data_size is 4 bytes but shape and FP32 need 8"),
    ("size beyond body", binary_body([tensor(parameters={"binary_data_size": 8})], F32x2[:6]),
     ErrorKind.INVALID_ARGUMENT, "holds only 6 bytes"),
    ("trailing bytes", binary_body([tensor(parameters={"binary_data_size": 8})], F32x2 + b"junk"),
     ErrorKind.INVALID_ARGUMENT, "add up to 8 bytes but 12 bytes follow"),
    ("both data and binary", binary_body([tensor(data=[1, 2], parameters={"binary_data_size": 8})], F32x2),
     ErrorKind.INVALID_ARGUMENT, "both 'data' and"),
    ("second input overruns", binary_body([tensor("a", parameters={"binary_data_size": 8}),
                                           tensor("b", parameters={"binary_data_size": 8})], F32x2 + F32x2[:4]),
     ErrorKind.INVALID_ARGUMENT, "input 'b': binary data ends at byte 16"),
]


@pytest.mark.parametrize(("body", "kind", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_request_is_refused(body: tuple[memoryview, str | None], kind: ErrorKind, message: str) -> None:
    with pytest.raises(ServingError) as err:
        decode_infer_request(body[0], body[1], "m", "", LIMIT)
    assert err.value.kind == kind
    assert message in err.value.message, err.value.message


def test_valid_request_after_refusals_still_decodes() -> None:
    """The codec holds no state: a good body after all the bad ones decodes normally."""
    body, header = binary_body([tensor("a", parameters={"binary_data_size": 8}), tensor("b", data=[3, 4])], F32x2)
    request = decode_infer_request(body, header, "m", "2", LIMIT)
    assert [t.data.tolist() for t in request.inputs] == [[1.0, 2.0], [3.0, 4.0]]
    assert request.model_version == "2"


def test_uint64_extremes_in_json_stay_exact() -> None:
    body, _ = json_body({"inputs": [tensor(datatype="UINT64", data=[0, 2**64 - 1])]})
    (decoded,) = decode_infer_request(body, None, "m", "", LIMIT).inputs
    assert decoded.data.tolist() == [0, 2**64 - 1] and decoded.data.dtype == np.dtype("<u8")
