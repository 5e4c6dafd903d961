"""BYTES and the classification extension on the real ports: framed text (valid or mangled) to a model that
declares a BYTES `text` input but has no tokenizer, and random classification parameters, over HTTP and gRPC.

Each answer must be a 4xx / client gRPC status naming the problem, never a 5xx/INTERNAL, and the server keeps
answering valid requests exactly (assert_still_correct, as in test_wire_fuzz.py).
"""

from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from tests.hardening.tally import tried
from tests.hardening.test_wire_fuzz import WIRE
from tests.hardening.wire import assert_still_correct, error_text


@st.composite
def framed_bytes(draw: st.DrawFn) -> tuple[bytes, int]:
    """tritonclient-framed elements, then maybe mangled: a cut, trailing bytes, a patched length prefix."""
    values = draw(st.lists(st.binary(max_size=10), min_size=1, max_size=6))
    data = bytearray(b"".join(struct.pack("<I", len(v)) + v for v in values))
    mangle = draw(st.sampled_from(["none", "cut", "extend", "patch", "count"]))
    count = len(values)
    if mangle == "cut":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif mangle == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    elif mangle == "patch":
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif mangle == "count":
        count = draw(st.integers(0, 12))
    return bytes(data), count


def texty_request(framed: bytes, count: int, with_tensor: bool) -> tuple[bytes, dict[str, str]]:
    inputs: list[dict] = [{"name": "text", "datatype": "BYTES", "shape": [count, 1],
                           "parameters": {"binary_data_size": len(framed)}}]
    if with_tensor:
        inputs.insert(0, {"name": "INPUT0", "datatype": "FP32", "shape": [count, 16], "data": [0.5] * (16 * count)})
    header = json.dumps({"inputs": inputs}).encode()
    return header + framed, {"Inference-Header-Content-Length": str(len(header))}


@WIRE
@given(case=framed_bytes(), with_tensor=st.booleans())
def test_bytes_framings_get_named_client_errors_on_both_ports(hard_server, hard_repository, hard_modules, http,  # type: ignore[no-untyped-def]
                                                              channel, case: tuple[bytes, int],
                                                              with_tensor: bool) -> None:
    """Text to a model without a tokenizer: whatever the framing, a 400 / INVALID_ARGUMENT that says what is wrong
    (the framing, the batch size, a missing input, or that the model cannot use text), never a 5xx."""
    tried("wire: BYTES framings, HTTP and gRPC", 2)
    framed, count = case
    status, payload = http.request("POST", "/v2/models/texty/infer", *texty_request(framed, count, with_tensor))
    assert status == 400, (status, payload)
    message = error_text(status, payload, hard_repository[0])
    assert any(w in message for w in ("BYTES", "no tokenizer", "batch size", "requires inputs", "shape")), message
    request = pb.ModelInferRequest(model_name="texty", raw_input_contents=[framed])
    request.inputs.add(name="text", datatype="BYTES", shape=[count, 1])
    if with_tensor:
        request.inputs.insert(0, pb.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32",
                                                                         shape=[count, 16]))
        request.raw_input_contents.insert(0, np.full((count, 16), 0.5, np.float32).tobytes())
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=pb.ModelInferRequest.SerializeToString,
                               response_deserializer=pb.ModelInferResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (info.value.code(), info.value.details())
    if np.random.default_rng().random() < 0.05:
        assert_still_correct(hard_server, hard_modules["mlp"])


class_counts = st.one_of(st.integers(-3, 12), st.sampled_from([2**31, 2**63 - 1]), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3), st.none())


@WIRE
@given(k=class_counts, binary=st.booleans(), rows=st.integers(1, 3))
def test_classification_requests_answer_top_k_or_a_client_error(hard_server, hard_repository, http,  # type: ignore[no-untyped-def]
                                                                k: object, binary: bool, rows: int) -> None:
    tried("wire: classification parameters, HTTP and gRPC", 2)
    x = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
    document = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [rows, 16], "data": x.ravel().tolist()}],
                "outputs": [{"name": "OUTPUT0", "parameters": {"classification": k, "binary_data": binary}}]}
    status, payload = http.request("POST", "/v2/models/classifier/infer", json.dumps(document).encode())
    valid = type(k) is int and k >= 0
    if not valid:
        assert status == 400 and "classification" in error_text(status, payload, hard_repository[0])
    else:
        assert status == 200, payload
        output = json.JSONDecoder().raw_decode(payload.decode("latin-1"))[0]["outputs"][0]  # header, then binary
        expected_shape = [rows, min(int(k), 4)] if k else [rows, 4]  # k 0 means no classification (tritonclient)
        assert output["shape"] == expected_shape and output["datatype"] == ("BYTES" if k else "FP32")
    if type(k) is int and -(2**63) <= k < 2**63:
        request = pb.ModelInferRequest(model_name="classifier", raw_input_contents=[x.tobytes()])
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[rows, 16])
        request.outputs.add(name="OUTPUT0").parameters["classification"].int64_param = k
        stub = grpc.insecure_channel(hard_server.grpc_url)
        try:
            call = stub.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
            if valid:
                reply = call(request, timeout=10)
                assert list(reply.outputs[0].shape) == expected_shape
            else:
                with pytest.raises(grpc.RpcError) as info:
                    call(request, timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "classification" in \
                    info.value.details()
        finally:
            stub.close()
