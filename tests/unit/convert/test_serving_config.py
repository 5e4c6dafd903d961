"""What the converter writes for batching and warmup (server/convert/serving_config.py via build_config)."""

from __future__ import annotations

import torch
from torch import nn
from tritonclient.grpc import model_config_pb2 as mc

from server.batching.ragged import padding_spec
from server.convert.serving_config import WARMUP_LENGTH, add_warmup
from server.convert.sources import Source, TensorSpec
from server.convert.writer import build_config


def source(kind: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> Source:
    return Source(kind=kind, label="x", model=nn.Identity(), targets=[], heads=set(), blocks=[], inputs=inputs,
                  outputs=outputs, export=lambda: None)  # type: ignore[arg-type, return-value]


ENCODER = source("huggingface",
                 [TensorSpec(n, torch.int64, (-1,), n == "token_type_ids")
                  for n in ("input_ids", "attention_mask", "token_type_ids")],
                 [TensorSpec("last_hidden_state", torch.float32, (-1, 384)),
                  TensorSpec("sentence_embedding", torch.float32, (384,))])


def test_a_hugging_face_encoder_pads_and_warms_up_one_row_and_a_budget_full_batch() -> None:
    config = build_config("enc", ENCODER, 64, True)
    spec = padding_spec(config)
    assert spec is not None and spec.mask == "attention_mask" and spec.sequence_outputs == {"last_hidden_state"}
    rows = min(64, spec.max_batch_tokens // WARMUP_LENGTH)
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [("batch_1", 1), (f"batch_{rows}", rows)]
    for sample in config.model_warmup:
        assert sorted(sample.inputs) == ["attention_mask", "input_ids", "token_type_ids"]
        assert all(list(i.dims) == [WARMUP_LENGTH] and i.zero_data for i in sample.inputs.values())


def test_a_padded_encoder_gets_two_instances_and_an_mlp_one() -> None:
    encoder = build_config("enc", ENCODER, 64, True)
    assert [(g.count, g.kind) for g in encoder.instance_group] == [(2, mc.ModelInstanceGroup.KIND_AUTO)]
    mlp = source("program", [TensorSpec("pixels", torch.float32, (784,))], [TensorSpec("out", torch.float32, (10,))])
    assert sum(g.count for g in build_config("mlp", mlp, 64, True).instance_group) <= 1


def test_without_dynamic_batching_nothing_is_padded() -> None:
    config = build_config("enc", ENCODER, 64, False)
    assert padding_spec(config) is None and sum(g.count for g in config.instance_group) <= 1


def test_an_mlp_warms_up_batch_1_and_max_batch_and_does_not_pad() -> None:
    mlp = source("program", [TensorSpec("pixels", torch.float32, (784,))], [TensorSpec("out", torch.float32, (10,))])
    config = build_config("mlp", mlp, 64, True)
    assert "pad_to_longest" not in config.parameters
    assert [(w.name, w.batch_size, list(w.inputs["pixels"].dims)) for w in config.model_warmup] == [
        ("batch_1", 1, [784]), ("batch_64", 64, [784])]


def test_a_program_with_a_variable_dim_gets_no_warmup() -> None:
    ragged = source("program", [TensorSpec("x", torch.float32, (-1,))], [TensorSpec("y", torch.float32, (-1,))])
    assert not build_config("r", ragged, 8, True).model_warmup


def test_an_optional_text_input_is_left_out_of_the_warmup() -> None:
    config = build_config("enc", ENCODER, 16, True)
    del config.model_warmup[:]
    config.input.add(name="text", data_type=mc.TYPE_STRING, dims=[1], optional=True)
    add_warmup(config)
    assert config.model_warmup and all("text" not in w.inputs for w in config.model_warmup)
