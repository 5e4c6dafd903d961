"""Calibration augmentation leaves specials and padding alone and is seeded; coverage figures and warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.convert.augment import augmented
from server.convert.calibration import Batch, load_dataset
from server.convert.coverage import NARROW, SMALL, coverage
from server.convert.sources import load_source
from tests.unit.convert import tiny_models


def text_batch(rows: int = 8, length: int = 40, pad: int = 5) -> Batch:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(200, 1000, (rows, length), generator=g)  # no special id inside
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[0, length - pad:] = False  # row 0 is padded: [CLS] ... [SEP] [PAD] x pad
    ids[:, 0], ids[0, length - pad - 1], ids[1:, -1] = 101, 102, 102
    ids[0, length - pad:] = 0
    return Batch({"input_ids": ids, "attention_mask": mask.long()}, token_mask=mask)


def test_augmentation_keeps_specials_and_padding_and_replaces_about_the_fraction() -> None:
    batch = text_batch()
    copies = augmented([batch], copies=2, fraction=0.3, vocab_size=1000, special_ids=[0, 101, 102])
    assert len(copies) == 2
    for copy in copies:
        ids, original = copy.inputs["input_ids"], batch.inputs["input_ids"]
        assert torch.equal(copy.token_mask, batch.token_mask)
        assert torch.equal(ids[:, 0], original[:, 0]) and torch.equal(ids[1:, -1], original[1:, -1])
        assert torch.equal(ids[0, 34:], original[0, 34:])  # [SEP] and the padding untouched
        interior = torch.cat([ids[0, 1:34], ids[1:, 1:-1].reshape(-1)])
        assert not bool(torch.isin(interior, torch.tensor([0, 101, 102])).any())  # no special drawn
        # the interior multiset changes only where tokens were replaced (rotating spans keeps the multiset)
        before = torch.cat([original[0, 1:34], original[1:, 1:-1].reshape(-1)])
        kept = sum(min(int((interior == v).sum()), int((before == v).sum())) for v in before.unique())
        replaced = 1 - kept / before.numel()
        assert 0.2 < replaced < 0.4, replaced  # 300 tokens at p = 0.3: 4+ standard deviations either side
    assert not torch.equal(copies[0].inputs["input_ids"], copies[1].inputs["input_ids"])  # copies differ
    again = augmented([batch], copies=2, fraction=0.3, vocab_size=1000, special_ids=[0, 101, 102])
    assert all(torch.equal(a.inputs["input_ids"], b.inputs["input_ids"]) for a, b in zip(copies, again, strict=True))


def test_augmentation_skips_array_batches_and_checks_the_fraction() -> None:
    assert augmented([Batch({"x": torch.ones(2, 4)})], 1, 0.3, 100, []) == []
    with pytest.raises(ValueError, match="fraction"):
        augmented([text_batch()], 1, 1.5, 1000, [])


def test_coverage_of_text_counts_real_tokens_and_warns_when_small_and_narrow(tmp_path: Path) -> None:
    source = load_source(tiny_models.write_encoder(tmp_path / "tiny"), 16)
    (tmp_path / "c.txt").write_text("\n".join(tiny_models.LINES) + "\n", encoding="utf-8")
    (tmp_path / "e.txt").write_text("the cat sat\nzebra zebra zebra\n", encoding="utf-8")
    calibration = load_dataset(tmp_path / "c.txt", source)
    figures = coverage(calibration, len(source.tokenizer), load_dataset(tmp_path / "e.txt", source))
    words = [w for line in tiny_models.LINES for w in line.split()]
    lengths = sorted(len(line.split()) + 2 for line in tiny_models.LINES)  # + [CLS] [SEP]
    assert figures["samples"] == 20 and figures["tokens"] == len(words) + 40
    assert figures["distinct_tokens"] == len(set(words)) + 2
    assert figures["vocabulary_coverage"] == round((len(set(words)) + 2) / len(source.tokenizer), 6)
    assert (figures["length_min"], figures["length_max"], figures["length_median"]) == (
        lengths[0], lengths[-1], lengths[10])
    assert figures["evaluation_tokens_seen"] == 0.7  # of 10 tokens, the 3 [UNK] ("zebra") never occur in calibration
    text = " ".join(figures["warnings"])
    assert f"only 20 calibration samples (at least {SMALL}" in text and "narrow" in text
    assert "30% of the evaluation tokens" in text
    assert len(set(words)) + 2 < NARROW


def test_coverage_of_arrays_counts_samples_only(tmp_path: Path) -> None:
    program, _ = tiny_models.write_mlp(tmp_path)
    np.savez(tmp_path / "big.npz", x=np.ones((200, 64), np.float32))
    figures = coverage(load_dataset(tmp_path / "big.npz", load_source(program, 16)), None)
    assert figures == {"samples": 200, "warnings": []}


def test_several_calibration_files_are_one_dataset(tmp_path: Path) -> None:
    program, _ = tiny_models.write_mlp(tmp_path)
    source = load_source(program, 16)
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 64), np.float32))
    np.savez(tmp_path / "b.npz", x=np.ones((10, 64), np.float32))
    data = load_dataset([tmp_path / "a.npz", tmp_path / "b.npz"], source, limit=15)
    assert data.samples == 15 and data.label == "a.npz+b.npz"
    rows = torch.cat([b.inputs["x"] for b in data.batches])
    assert rows[:10].eq(0).all() and rows[10:].eq(1).all()
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="mixes array files and text files"):
        load_dataset([tmp_path / "a.npz", tmp_path / "t.txt"], source)
    np.savez(tmp_path / "c.npz", y=np.ones((10, 64), np.float32))
    with pytest.raises(ValueError, match="different arrays"):
        load_dataset([tmp_path / "a.npz", tmp_path / "c.npz"], source)


def test_several_text_files_concatenate_in_order(tmp_path: Path) -> None:
    source = load_source(tiny_models.write_encoder(tmp_path / "tiny"), 16)
    (tmp_path / "a.txt").write_text("the cat sat\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("dog\n\nbird flew\n", encoding="utf-8")
    data = load_dataset([tmp_path / "a.txt", tmp_path / "b.txt"], source)
    assert data.samples == 3 and data.label == "a.txt+b.txt"
    assert load_dataset([tmp_path / "a.txt", tmp_path / "b.txt"], source, limit=2).samples == 2
