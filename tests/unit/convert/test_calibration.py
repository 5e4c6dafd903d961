"""Calibration/evaluation files: arrays by input name, labels, clear errors for what does not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

from server.convert.calibration import load_dataset
from server.convert.sources import Source, TensorSpec


def source() -> Source:
    return Source(kind="program", label="t.pt2", model=nn.Identity(), targets=[], heads=set(), blocks=[],
                  inputs=[TensorSpec("pixels", torch.float32, (8,))], outputs=[TensorSpec("out", torch.float32, (8,))],
                  export=lambda: None)  # type: ignore[arg-type, return-value]


def test_npz_with_labels_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, pixels=np.arange(40 * 8, dtype=np.float64).reshape(40, 8), labels=np.arange(40) % 3)
    data = load_dataset(path, source(), limit=35)
    assert data.samples == 35 and data.has_labels
    assert [b.inputs["pixels"].shape[0] for b in data.batches] == [16, 16, 3]
    assert data.batches[0].inputs["pixels"].dtype == torch.float32
    assert data.batches[2].labels.tolist() == [32 % 3, 33 % 3, 34 % 3]


def test_safetensors_arrays(tmp_path: Path) -> None:
    path = tmp_path / "d.safetensors"
    save_file({"pixels": np.ones((3, 8), np.float32)}, str(path))
    data = load_dataset(path, source())
    assert data.samples == 3 and not data.has_labels and len(data.sha256) == 64


@pytest.mark.parametrize("arrays,message", [
    ({"image": np.ones((3, 8), np.float32)}, "lacks arrays \\['pixels'\\]"),
    ({"pixels": np.ones((3, 9), np.float32)}, "sample shape \\[9\\]"),
    ({"pixels": np.ones((3, 8), np.float32), "labels": np.ones((2,))}, "one class per sample"),
    ({"pixels": np.ones((0, 8), np.float32)}, "holds no samples"),
])
def test_bad_arrays_are_named(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(path, source())


def test_text_needs_a_tokenizer_and_files_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match="text files need a Hugging Face source"):
        load_dataset(path, source())
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz", source())
    (tmp_path / "p.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read arrays"):
        load_dataset(tmp_path / "p.npz", source())
