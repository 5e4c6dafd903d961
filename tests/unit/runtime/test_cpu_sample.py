"""The batch `cpu_precision: auto` compares and times the precisions on: the inputs a real request sends.

A converted text model has every token input optional (a request sends `text` or tokens); the sample used to skip
every optional input, so it was empty and the load failed with KeyError: 'attention_mask' (MiniLM under auto)."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.runtime.cpu import sample_batch, sample_inputs

TEXT_MODEL = """
name: "minilm" backend: "twofour" max_batch_size: 8
input [{ name: "input_ids" data_type: TYPE_INT64 dims: [-1] optional: true },
       { name: "attention_mask" data_type: TYPE_INT64 dims: [-1] optional: true },
       { name: "token_type_ids" data_type: TYPE_INT64 dims: [-1] optional: true },
       { name: "text" data_type: TYPE_STRING dims: [1] optional: true }]
output [{ name: "sentence_embedding" data_type: TYPE_FP32 dims: [4] }]
parameters { key: "text_required_inputs" value { string_value: "input_ids,attention_mask" } }
"""
MLP = """
name: "mlp" backend: "twofour" max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [16] }, { name: "BIAS" data_type: TYPE_FP32 dims: [16] optional: true }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [4] }]
"""


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_a_text_model_samples_the_token_inputs_a_request_must_send() -> None:
    config = parse(TEXT_MODEL)
    assert sample_inputs(config) == {"input_ids", "attention_mask"}
    batch = sample_batch(config, None, [8, 128])  # type: ignore[arg-type]  # the binding is not consulted
    assert sorted(batch) == ["attention_mask", "input_ids"]
    assert batch["input_ids"].shape == (8, 128) and bool(batch["attention_mask"].eq(1).all())


def test_all_optional_without_the_parameter_samples_every_tensor_input() -> None:
    config = parse(TEXT_MODEL)
    del config.parameters["text_required_inputs"]
    assert sample_inputs(config) == {"input_ids", "attention_mask", "token_type_ids"}


def test_a_model_with_required_inputs_leaves_its_optional_ones_to_the_binding() -> None:
    assert sample_inputs(parse(MLP)) == {"X"}
