"""BYTES tensors through every codec, checked against tritonclient's own serializers and request builders.

The client side of each round trip is the unmodified tritonclient code (serialize_byte_tensor, the HTTP client's
request body builder and response parser, the gRPC InferInput/InferResult), so these tests fail if our framing
differs from what a real client sends or reads.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from server.codec import bytes_tensor, grpc_tensors, http_infer
from server.errors import ErrorKind, ServingError
from server.types import InferResponse, InferTensor, to_numpy

TEXTS = np.array([["hello"], [""], ["d\u00f6ner \u2603 \U0001f600"], ["tab\tnew\nline \0 nul"]], dtype=object)
RAW = np.array([[b"\xff\xfe not utf-8"], [b""], [b"\0\0\0\0"], [bytes(range(256))]], dtype=object)


def utf8(array: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)


@pytest.mark.parametrize("values", [utf8(TEXTS), RAW], ids=["text", "binary"])
def test_framing_matches_tritonclient(values: np.ndarray) -> None:
    framed = serialize_byte_tensor(values).item()
    assert bytes_tensor.serialize(values) == framed
    decoded = bytes_tensor.deserialize(framed, values.size, "x")
    assert decoded.dtype == object and decoded.tolist() == values.reshape(-1).tolist()
    assert deserialize_bytes_tensor(bytes_tensor.serialize(decoded)).tolist() == values.reshape(-1).tolist()


def test_str_elements_are_encoded_as_utf8_like_tritonclient() -> None:
    assert bytes_tensor.serialize(TEXTS) == serialize_byte_tensor(TEXTS).item()


@pytest.mark.parametrize(("framed", "count", "words"), [
    (b"\x05\0\0\0abc", 1, "claims 5 bytes at byte 4, which runs past the end of its 7-byte data"),
    (b"\x01\0\0\0a\x02\0", 2, "need at least 8 bytes"),
    (b"\x01\0\0\0a\x02\0\0\0b\0\0", 3, "element 2: its 4-byte length prefix is truncated"),
    (b"\x01\0\0\0ab", 1, "1 bytes follow the last of its 1 BYTES elements"),
    (b"\xff\xff\xff\xff", 1, "claims 4294967295 bytes"),
    (b"", 1, "need at least 4 bytes"),
])
def test_bad_framing_names_the_problem(framed: bytes, count: int, words: str) -> None:
    with pytest.raises(ServingError) as info:
        bytes_tensor.deserialize(framed, count, "text")
    assert info.value.kind == ErrorKind.INVALID_ARGUMENT and words in info.value.message and "'text'" in \
        info.value.message


def test_empty_strings_and_empty_tensors_are_valid() -> None:
    assert bytes_tensor.deserialize(b"\0\0\0\0", 1, "x").tolist() == [b""]
    assert bytes_tensor.deserialize(b"", 0, "x").size == 0


def http_request(values: np.ndarray, binary: bool) -> tuple[memoryview, str | None]:
    tensor = httpclient.InferInput("text", list(values.shape), "BYTES")
    tensor.set_data_from_numpy(values, binary_data=binary)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    return memoryview(bytearray(body)), None if json_size is None else str(json_size)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_client_bodies_decode_to_bytes_object_arrays(binary: bool) -> None:
    body, header = http_request(TEXTS, binary)
    request = http_infer.decode_infer_request(body, header, "m", "", 1000)
    data = request.inputs[0].data
    assert data.dtype == object and data.shape == TEXTS.shape
    assert data.tolist() == utf8(TEXTS).tolist()


def test_http_binary_carries_any_bytes() -> None:
    body, header = http_request(RAW, True)
    assert http_infer.decode_infer_request(body, header, "m", "", 1000).inputs[0].data.tolist() == RAW.tolist()


def bytes_response(values: np.ndarray) -> InferResponse:
    array, datatype = to_numpy(values)
    return InferResponse("m", "1", [InferTensor("out", datatype, values.shape, array)])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_responses_read_back_with_tritonclient(binary: bool) -> None:
    body, header_length = http_infer.encode_infer_response(bytes_response(utf8(TEXTS)), binary)
    result = httpclient.InferResult.from_response_body(body, header_length=header_length)
    got = result.as_numpy("out")
    assert got.shape == TEXTS.shape
    # binary mode gives bytes back, JSON gives str: exactly tritonclient's behaviour with Triton
    assert got.tolist() == (utf8(TEXTS) if binary else TEXTS).tolist()


def test_json_response_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(ServingError) as info:
        http_infer.encode_infer_response(bytes_response(RAW), False)
    assert "output 'out'" in info.value.message and "not valid UTF-8" in info.value.message
    body, length = http_infer.encode_infer_response(bytes_response(RAW), True)
    assert httpclient.InferResult.from_response_body(body, header_length=length).as_numpy("out").tolist() == \
        RAW.tolist()


def grpc_request(values: np.ndarray) -> pb.ModelInferRequest:
    tensor = grpcclient.InferInput("text", list(values.shape), "BYTES")
    tensor.set_data_from_numpy(values)
    message = pb.ModelInferRequest(model_name="m", inputs=[tensor._get_tensor()])
    message.raw_input_contents.append(tensor._get_content())
    return message


@pytest.mark.parametrize("values", [utf8(TEXTS), RAW], ids=["text", "binary"])
def test_grpc_raw_contents_from_tritonclient(values: np.ndarray) -> None:
    data = grpc_tensors.decode_infer_request(grpc_request(values)).inputs[0].data
    assert data.dtype == object and data.shape == values.shape and data.tolist() == values.tolist()


def test_grpc_bytes_contents() -> None:
    message = pb.ModelInferRequest(model_name="m")
    entry = message.inputs.add(name="text", datatype="BYTES", shape=[2, 1])
    entry.contents.bytes_contents.extend([b"a", b"\xff"])
    assert grpc_tensors.decode_infer_request(message).inputs[0].data.tolist() == [[b"a"], [b"\xff"]]
    entry.contents.bytes_contents.append(b"c")
    with pytest.raises(ServingError, match="shape holds 2 elements but contents.bytes_contents has 3"):
        grpc_tensors.decode_infer_request(message)
    other = pb.ModelInferRequest(model_name="m")
    other.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.int_contents.append(1)
    with pytest.raises(ServingError, match="belongs in contents.bytes_contents, not contents.int_contents"):
        grpc_tensors.decode_infer_request(other)


def test_grpc_bad_framing_is_invalid_argument() -> None:
    message = grpc_request(utf8(TEXTS))
    message.raw_input_contents[0] = message.raw_input_contents[0][:-1]
    with pytest.raises(ServingError, match="runs past the end") as info:
        grpc_tensors.decode_infer_request(message)
    assert info.value.kind == ErrorKind.INVALID_ARGUMENT


@pytest.mark.parametrize("values", [utf8(TEXTS), RAW], ids=["text", "binary"])
def test_grpc_response_reads_back_with_tritonclient(values: np.ndarray) -> None:
    message = grpc_tensors.encode_infer_response(bytes_response(values))
    got = grpcclient.InferResult(pb.ModelInferResponse.FromString(message.SerializeToString())).as_numpy("out")
    assert got.shape == values.shape and got.tolist() == values.tolist()


def test_grpc_request_encoder_round_trips_bytes() -> None:
    request = grpc_tensors.decode_infer_request(grpc_request(RAW))
    again = grpc_tensors.decode_infer_request(grpc_tensors.encode_infer_request(request))
    assert again.inputs[0].data.tolist() == RAW.tolist()


def test_more_strings_than_a_request_may_carry_is_413_before_any_decoding() -> None:
    count = bytes_tensor.MAX_ELEMENTS + 1
    framed = b"\0\0\0\0" * count
    with pytest.raises(ServingError, match=f"at most {bytes_tensor.MAX_ELEMENTS} strings") as info:
        bytes_tensor.deserialize(framed, count, "text")
    assert info.value.kind == ErrorKind.TOO_LARGE
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="text", datatype="BYTES", shape=[count]).contents.bytes_contents.extend([b""] * count)
    with pytest.raises(ServingError, match="at most"):
        grpc_tensors.decode_infer_request(message)
    body = memoryview(bytearray(b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [%d], "data": []}]}'
                                % count))
    with pytest.raises(ServingError, match="at most"):
        http_infer.decode_infer_request(body, None, "m", "", 2 * count)
    assert bytes_tensor.deserialize(b"\0\0\0\0" * (count - 1), count - 1, "text").size == count - 1
