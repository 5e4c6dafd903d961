"""The padding rule read from config.pbtxt (ragged.py): which inputs and outputs carry the sequence dim."""

from __future__ import annotations

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.batching.ragged import DEFAULT_MAX_BATCH_TOKENS, padding_spec
from server.batching.work import WorkItem

ENCODER = """
name: "enc" max_batch_size: 8
input { name: "input_ids" data_type: TYPE_INT64 dims: [-1] }
input { name: "attention_mask" data_type: TYPE_INT64 dims: [-1] }
input { name: "scale" data_type: TYPE_FP32 dims: [1] }
output { name: "last_hidden_state" data_type: TYPE_FP32 dims: [-1, 4] }
output { name: "sentence_embedding" data_type: TYPE_FP32 dims: [4] }
"""


def config(parameters: str = 'parameters { key: "pad_to_longest" value { string_value: "attention_mask" } }',
           text: str = ENCODER) -> mc.ModelConfig:
    return text_format.Parse(text + parameters, mc.ModelConfig())


def work(length: int, rows: int = 1, mask_length: int | None = None) -> WorkItem:
    inputs = {"input_ids": torch.ones(rows, length, dtype=torch.int64),
              "attention_mask": torch.ones(rows, length if mask_length is None else mask_length, dtype=torch.int64),
              "scale": torch.ones(rows, 1)}
    return WorkItem(inputs=inputs, rows=rows, arrival_ns=0)


def test_a_model_without_the_parameter_does_not_pad() -> None:
    assert padding_spec(config("")) is None


def test_sequence_inputs_and_outputs_follow_the_variable_first_dim() -> None:
    spec = padding_spec(config())
    assert spec is not None and spec.mask == "attention_mask"
    assert spec.sequence_inputs == {"input_ids", "attention_mask"}
    assert spec.sequence_outputs == {"last_hidden_state"}
    assert spec.max_batch_tokens == DEFAULT_MAX_BATCH_TOKENS and spec.pad_values == {}


def test_lengths_share_a_key_other_dims_do_not() -> None:
    spec = padding_spec(config())
    assert spec is not None
    assert spec.shape_key(work(12)) == spec.shape_key(work(30)) == spec.shape_key(work(5, rows=3))
    assert work(12).shape_key() != work(30).shape_key()  # Triton's rule, for models that do not pad
    other = work(12)
    other.inputs["scale"] = torch.ones(1, 2)
    assert spec.shape_key(other) != spec.shape_key(work(12))
    assert spec.length(work(17)) == 17


def test_sequence_inputs_of_one_request_must_agree_on_length() -> None:
    spec = padding_spec(config())
    assert spec is not None
    assert spec.check(work(12)) == ""
    assert "same length (dim 1): attention_mask 11, input_ids 12" in spec.check(work(12, mask_length=11))
    assert "at least one token" in spec.check(work(0))
    missing = work(12)
    del missing.inputs["attention_mask"]
    assert "'attention_mask'" in spec.check(missing) and "required" in spec.check(missing)


def test_budget_and_pad_values_are_read() -> None:
    spec = padding_spec(config('parameters { key: "pad_to_longest" value { string_value: "attention_mask" } } '
                               'parameters { key: "max_batch_tokens" value { string_value: "512" } } '
                               'parameters { key: "pad_value:input_ids" value { string_value: "1" } }'))
    assert spec is not None and spec.max_batch_tokens == 512 and spec.pad_values == {"input_ids": 1}


@pytest.mark.parametrize("parameters,message", [
    ('key: "pad_to_longest" value { string_value: "mask" }', "names 'mask', which is not one of the model's inputs"),
    ('key: "pad_to_longest" value { string_value: "scale" }', "must have a variable first dim"),
])
def test_config_mistakes_name_the_parameter(parameters: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        padding_spec(config(f"parameters {{ {parameters} }}"))


@pytest.mark.parametrize("extra,message", [
    ('key: "max_batch_tokens" value { string_value: "0" }', "max_batch_tokens must be at least 1"),
    ('key: "max_batch_tokens" value { string_value: "lots" }', "max_batch_tokens must be an integer"),
    ('key: "pad_value:scale" value { string_value: "1" }', "names no sequence input"),
    ('key: "pad_value:attention_mask" value { string_value: "1" }', "always padded with 0"),
])
def test_bad_optional_parameters_are_refused(extra: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        padding_spec(config('parameters { key: "pad_to_longest" value { string_value: "attention_mask" } } '
                            f"parameters {{ {extra} }}"))


def test_padding_needs_a_batched_model() -> None:
    with pytest.raises(ValueError, match="needs max_batch_size > 0"):
        padding_spec(config(text=ENCODER.replace("max_batch_size: 8", "max_batch_size: 0")))
