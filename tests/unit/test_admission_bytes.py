"""BYTES inputs at admission: validated against the config, then passed on as numpy object arrays, never torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.admission import tensors_only, validate_inputs
from server.errors import ServingError
from server.input_spec import model_spec
from server.types import InferRequest, InferTensor

CONFIG = """
name: "texty"
max_batch_size: 8
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [16] optional: true },
       { name: "text" data_type: TYPE_STRING dims: [1] optional: true }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }]
"""
SPEC = model_spec(text_format.Parse(CONFIG, mc.ModelConfig()))


def request(*tensors: InferTensor) -> InferRequest:
    return InferRequest("texty", "", list(tensors))


def text(values: list[bytes], shape: tuple[int, ...] | None = None) -> InferTensor:
    data = np.empty(len(values), dtype=object)
    data[:] = values
    shape = shape or (len(values), 1)
    return InferTensor("text", "BYTES", shape, data.reshape(shape))


def test_bytes_input_stays_a_numpy_object_array() -> None:
    inputs, rows = validate_inputs(request(text([b"a", b"", b"\xff"])), SPEC, 1000)
    assert rows == 3 and isinstance(inputs["text"], np.ndarray) and inputs["text"].dtype == object
    assert inputs["text"].shape == (3, 1) and inputs["text"].reshape(-1).tolist() == [b"a", b"", b"\xff"]


def test_tensor_inputs_still_become_torch() -> None:
    x = InferTensor("INPUT0", "FP32", (2, 16), np.zeros((2, 16), np.float32))
    inputs, _ = validate_inputs(request(x), SPEC, 1000)
    assert isinstance(inputs["INPUT0"], torch.Tensor)
    tensors_only(inputs, "texty")  # tensors pass


@pytest.mark.parametrize(("tensor", "words"), [
    (text([b"a", b"b"], (1, 2)), "shape [1, 2] does not match the model's [-1, 1]"),
    (text([b"a"] * 9), "batch size 9 is outside 1..8"),
    (InferTensor("text", "FP32", (1, 1), np.zeros((1, 1), np.float32)),
     "datatype FP32 does not match the model's BYTES"),
    (InferTensor("INPUT0", "BYTES", (1, 16), np.full((1, 16), b"x", dtype=object)),
     "datatype BYTES does not match the model's FP32"),
])
def test_bytes_against_the_config(tensor: InferTensor, words: str) -> None:
    with pytest.raises(ServingError, match=words.replace("[", r"\[").replace("]", r"\]")):
        validate_inputs(request(tensor), SPEC, 1000)


def test_text_for_a_model_without_tokenizer_is_refused_by_name() -> None:
    inputs, _ = validate_inputs(request(text([b"hello"])), SPEC, 1000)
    with pytest.raises(ServingError, match="model 'texty' has no tokenizer .* BYTES \\(text\\) input 'text'"):
        tensors_only(inputs, "texty")
