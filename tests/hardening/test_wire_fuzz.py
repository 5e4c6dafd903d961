"""Garbage on the real ports: random and hand-picked malformed HTTP and gRPC input against a running server.

Each answer must be a client error that names the problem ({"error": ...} with a 4xx, or a non-INTERNAL gRPC
status), never a 5xx/INTERNAL/UNKNOWN, never a hang; and valid requests sent in between keep returning exactly
what the real model computes.
"""

from __future__ import annotations

import json
import socket

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from tests.hardening.conftest import MAX_BYTES, MAX_ELEMENTS
from tests.hardening.tally import tried
from tests.hardening.test_codec_properties import grpc_requests, json_values
from tests.hardening.wire import assert_still_correct, error_text, raw_exchange
from tests.support.numerics import SMALL_MLP

WIRE = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
# not "broken": its 503 is the server's state, not the request; texty and classifier: see test_wire_fuzz_bytes.py
MODELS = ["mlp", "mlp_batched", "mixed", "texty", "classifier", "nosuch"]
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}

mlp_inputs = st.fixed_dictionaries(
    {"name": st.sampled_from(["INPUT0", "A", "input0", "text"]),
     "datatype": st.sampled_from(["FP32", "FP16", "INT32", "BOOL", "BYTES", "X"]),
     "shape": st.lists(st.one_of(st.integers(-1, 20), st.sampled_from([10**12, 2**64, 2**63 - 1])), max_size=4)},
    optional={"data": st.one_of(json_values, st.lists(st.floats(allow_nan=False), max_size=40)),
              "parameters": st.fixed_dictionaries({}, optional={
                  "binary_data_size": st.one_of(st.integers(-1, 200), st.sampled_from([2**64, 10**30]))})})
headers = st.fixed_dictionaries({}, optional={
    "Content-Type": st.sampled_from(["text/plain", "application/json", "application/octet-stream", "x/\u00ff"]),
    "Inference-Header-Content-Length": st.one_of(st.integers(-2, 400).map(str),
                                                 st.sampled_from(["", "abc", "\u00b2", "1" * 50])),
    "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity"]),
})


@WIRE
@given(model=st.sampled_from(MODELS), version=st.sampled_from(["", "1", "2", "0", "-1", "x", "%C2%B2"]),
       document=st.fixed_dictionaries({"inputs": st.lists(mlp_inputs, max_size=2)},
                                      optional={"outputs": json_values, "parameters": json_values}),
       tail=st.binary(max_size=128), head=headers)
def test_http_infer_fuzz_gets_client_errors_only(hard_server, hard_repository, hard_modules, http,  # type: ignore[no-untyped-def]
                                                 model, version, document, tail, head) -> None:
    tried("wire: HTTP infer requests")
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    status, payload = http.request("POST", path, json.dumps(document).encode() + tail, head)
    assert status < 500, (status, payload)
    if status != 200:
        error_text(status, payload, hard_repository[0])
    if np.random.default_rng().random() < 0.05:
        assert_still_correct(hard_server, hard_modules["mlp"])


BAD_BODIES = [
    (b"\xff\xfe\x00 not utf-8", {}),
    (b'{"inputs": [' * 3000, {}),  # deeply nested, unterminated
    (b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":' + b"[" * 70 + b"1" + b"]" * 70 + b"}]}",
     {}),
    (b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1000000,1000000],"data":[1]}]}', {}),
    (b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[4611686018427387904,4611686018427387904,0],'
     b'"data":[]}]}', {}),
    (b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":[NaN,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}',
     {}),
    (b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":[1e999,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}',
     {}),
    (b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"parameters":{"binary_data_size":64}}]}' +
     b"\0" * 8, {"Inference-Header-Content-Length": "98"}),
    (b"{}", {"Inference-Header-Content-Length": "99999999999999999999999999999999"}),
    (b"{}", {"Inference-Header-Content-Length": "\u00b2"}),
    (b"{}", {"Content-Encoding": "gzip"}),
    # Content-Type is not consulted (as in Triton: tritonclient sends JSON as octet-stream): the body decides
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", {"Content-Type": "image/png"}),
]


@pytest.mark.parametrize("case", range(len(BAD_BODIES)))
def test_hand_picked_bad_bodies_are_client_errors(hard_server, hard_repository, http, case: int) -> None:  # type: ignore[no-untyped-def]
    tried("wire: HTTP hand-picked bodies")
    body, head = BAD_BODIES[case]
    status, payload = http.request("POST", "/v2/models/mlp/infer", body, head)
    assert 400 <= status < 500, (status, payload)
    assert len(error_text(status, payload, hard_repository[0])) > 10


RAW_HTTP = [
    b"\x00\x01\x02\x03garbage\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",
    b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\"",  # truncated
    b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"inp",  # cut chunk
    b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 2_000_000 + b"\r\n\r\n",  # 431
    b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-a: b\r\n" * 300_000 + b"\r\n",  # 431
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n12345",
    b"GET /v2/health/live HTTP/9.9\r\n\r\n",
    b"",
]


@pytest.mark.parametrize("case", range(len(RAW_HTTP)))
def test_raw_http_garbage_never_hangs_or_500s(hard_server, hard_modules, case: int) -> None:  # type: ignore[no-untyped-def]
    tried("wire: raw HTTP byte streams")
    answer = raw_exchange(hard_server.http_port, RAW_HTTP[case])  # raises socket.timeout on a hang
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 4"), status_line
    assert hard_server.alive()
    assert_still_correct(hard_server, hard_modules["mlp"])


def test_raw_grpc_port_garbage_never_hangs_or_kills(hard_server, hard_modules) -> None:  # type: ignore[no-untyped-def]
    for data in [b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 1000, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 200,
                 b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x04\x00\x00\x00\x00\x00", b""]:
        tried("wire: raw gRPC-port byte streams")
        try:
            raw_exchange(hard_server.grpc_port, data, timeout=15)
        except socket.timeout:
            pytest.fail(f"gRPC port hung on {data[:30]!r}")
    assert hard_server.alive()
    assert_still_correct(hard_server, hard_modules["mlp"])


@WIRE
@given(data=st.binary(max_size=200), method=st.sampled_from(["ModelInfer", "ModelMetadata", "ModelConfig",
                                                              "RepositoryModelLoad", "ServerReady"]))
def test_grpc_random_bytes_are_invalid_argument(hard_server, channel, data: bytes, method: str) -> None:  # type: ignore[no-untyped-def]
    tried("wire: gRPC raw message bytes")
    call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
    try:
        call(data, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in SERVER_FAULTS, (exc.code(), exc.details())
        assert exc.details()


@WIRE
@given(message=grpc_requests(), model=st.sampled_from(MODELS))
def test_grpc_random_requests_get_client_statuses(hard_server, hard_repository, hard_modules, channel,  # type: ignore[no-untyped-def]
                                                  message: pb.ModelInferRequest, model: str) -> None:
    tried("wire: gRPC ModelInferRequest messages")
    message.model_name = model
    if message.model_version not in ("", "1"):
        message.model_version = np.random.default_rng().choice(["", "1", "²", "-1", "99999999999999999999"])
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=pb.ModelInferRequest.SerializeToString,
                               response_deserializer=pb.ModelInferResponse.FromString)
    try:
        call(message, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in SERVER_FAULTS, (exc.code(), exc.details())
        assert exc.details() and str(hard_repository[0]) not in exc.details()
    if np.random.default_rng().random() < 0.05:
        assert_still_correct(hard_server, hard_modules["mlp"])


def test_grpc_stream_survives_garbage_then_serves(hard_server, hard_modules, channel) -> None:  # type: ignore[no-untyped-def]
    """A stream of bad messages gets per-message errors; the valid ones in between are answered correctly."""
    tried("wire: gRPC stream messages", 6)
    x = np.ones((1, 16), np.float32)
    good = pb.ModelInferRequest(model_name="mlp", id="good",
                                inputs=[pb.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32",
                                                                              shape=[1, 16])],
                                raw_input_contents=[x.tobytes()])
    bad = [pb.ModelInferRequest(model_name="mlp", id="bad1"),
           pb.ModelInferRequest(model_name="mlp", id="bad2", inputs=[pb.ModelInferRequest.InferInputTensor(
               name="INPUT0", datatype="FP32", shape=[10**6, 10**6])]),
           pb.ModelInferRequest(model_name="nosuch", id="bad3")]
    stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                   request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelStreamInferResponse.FromString)
    replies = list(stream(iter([good, *bad, good, good]), timeout=30))
    by_id: dict[str, list[pb.ModelStreamInferResponse]] = {}
    for reply in replies:
        by_id.setdefault(reply.infer_response.id, []).append(reply)
    assert len(by_id["good"]) == 3 and all(not r.error_message for r in by_id["good"])
    expected = hard_modules["mlp"](__import__("torch").from_numpy(x)).detach().numpy()
    for reply in by_id["good"]:
        out = np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32).reshape(1, 4)
        SMALL_MLP.assert_close(out, expected)
    for name in ("bad1", "bad2", "bad3"):
        assert by_id[name][0].error_message


def test_limits_apply_on_both_transports(hard_server, hard_repository, http) -> None:  # type: ignore[no-untyped-def]
    tried("wire: limit probes", 4)
    too_many = np.zeros((8, MAX_ELEMENTS // 8 + 8), np.float32)  # element limit, under the byte limit
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(too_many.shape),
                                     "parameters": {"binary_data_size": too_many.nbytes}}]}).encode()
    status, payload = http.request("POST", "/v2/models/mlp/infer", header + too_many.tobytes(),
                                   {"Inference-Header-Content-Length": str(len(header))})
    assert status == 413 and str(MAX_ELEMENTS) in error_text(status, payload, hard_repository[0])
    status, payload = http.request("POST", "/v2/models/mlp/infer", b"x" * (MAX_BYTES + 1))
    assert status == 413 and str(MAX_BYTES) in error_text(status, payload, hard_repository[0])
    stub = grpc.insecure_channel(hard_server.grpc_url, options=[("grpc.max_send_message_length", -1)])
    call = stub.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                            request_serializer=pb.ModelInferRequest.SerializeToString,
                            response_deserializer=pb.ModelInferResponse.FromString)
    for shape, raw, fragment in [([10**6, 10**6], b"", "limit"), (list(too_many.shape), too_many.tobytes(), "limit"),
                                 ([1, 16], b"\0" * (MAX_BYTES + 100_000), "larger than max")]:
        message = pb.ModelInferRequest(model_name="mlp", inputs=[pb.ModelInferRequest.InferInputTensor(
            name="INPUT0", datatype="FP32", shape=shape)], raw_input_contents=[raw])
        with pytest.raises(grpc.RpcError) as info:
            call(message, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and fragment in info.value.details()
    stub.close()

