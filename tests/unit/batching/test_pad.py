"""Padded merge and split (pad.py): every request comes back exactly as the model computed its own rows."""

from __future__ import annotations

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.batching.merge import BatchShapeError
from server.batching.pad import merge_padded, padded_tokens, split_padded
from server.batching.ragged import PaddingSpec, padding_spec
from tests.unit.batching.test_ragged import ENCODER


def spec(pad_ids: int = 0) -> PaddingSpec:
    extra = f'parameters {{ key: "pad_value:input_ids" value {{ string_value: "{pad_ids}" }} }}' if pad_ids else ""
    text = ENCODER + 'parameters { key: "pad_to_longest" value { string_value: "attention_mask" } }' + extra
    made = padding_spec(text_format.Parse(text, mc.ModelConfig()))
    assert made is not None
    return made


def request(length: int, rows: int = 1, start: int = 1) -> dict[str, torch.Tensor]:
    ids = torch.arange(start, start + rows * length, dtype=torch.int64).reshape(rows, length)
    return {"input_ids": ids, "attention_mask": torch.ones(rows, length, dtype=torch.int64),
            "scale": torch.full((rows, 1), float(start))}


def test_shorter_requests_are_padded_with_the_pad_value_and_mask_zero() -> None:
    a, b = request(2, start=10), request(4, rows=2, start=100)
    batch, longest = merge_padded([a, b], [2, 4], spec(pad_ids=7))
    assert longest == 4
    assert batch["input_ids"].tolist() == [[10, 11, 7, 7], *b["input_ids"].tolist()]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert batch["scale"].flatten().tolist() == [10.0, 100.0, 100.0]  # not a sequence input: concatenated


def test_equal_lengths_are_concatenated_and_a_single_request_passes_through() -> None:
    one = request(3)
    batch, longest = merge_padded([one], [3], spec())
    assert longest == 3 and batch["input_ids"] is one["input_ids"]
    batch, _ = merge_padded([request(3), request(3, start=50)], [3, 3], spec())
    assert batch["input_ids"].shape == (2, 3)


def test_split_narrows_sequence_outputs_and_passes_sentence_outputs() -> None:
    outputs = {"last_hidden_state": torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(3, 4, 4),
               "sentence_embedding": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    first, second = split_padded(outputs, [1, 2], [2, 4], 4, spec())
    assert first["last_hidden_state"].shape == (1, 2, 4) and first["last_hidden_state"].is_contiguous()
    assert torch.equal(first["last_hidden_state"], outputs["last_hidden_state"][:1, :2])
    assert torch.equal(second["last_hidden_state"], outputs["last_hidden_state"][1:])
    assert second["last_hidden_state"].data_ptr() == outputs["last_hidden_state"][1:].data_ptr()  # a view
    assert torch.equal(first["sentence_embedding"], outputs["sentence_embedding"][:1])
    assert second["sentence_embedding"].shape == (2, 4)


def test_a_sequence_output_without_the_padded_length_is_a_shape_error() -> None:
    outputs = {"last_hidden_state": torch.zeros(2, 3, 4), "sentence_embedding": torch.zeros(2, 4)}
    with pytest.raises(BatchShapeError, match="padded sequence length 5 along dim 1"):
        split_padded(outputs, [1, 1], [5, 2], 5, spec())


def test_a_masked_model_gives_each_request_its_own_answer() -> None:
    """End to end on a real masked computation: a masked mean over positions, alone vs padded together."""
    def model(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = batch["input_ids"].to(torch.float32).unsqueeze(-1).repeat(1, 1, 4) * batch["scale"].unsqueeze(-1)
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
        return {"last_hidden_state": hidden, "sentence_embedding": (hidden * mask).sum(1) / mask.sum(1)}

    requests, lengths = [request(2, start=1), request(5, rows=2, start=30), request(3, start=9)], [2, 5, 3]
    batch, longest = merge_padded(requests, lengths, spec())
    parts = split_padded(model(batch), [1, 2, 1], lengths, longest, spec())
    for alone, part in zip(map(model, requests), parts, strict=True):
        for name in alone:
            assert torch.equal(alone[name], part[name]), name  # integers in fp32: exact


def test_padded_tokens_counts_padding_over_rows_times_longest() -> None:
    assert padded_tokens([2, 4], [1, 2], 4) == (2, 12)
    assert padded_tokens([3], [5], 3) == (0, 15)
