"""The version artefacts: weightless program + safetensors weights with 2:4 layers compressed, loaded exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from server.artifacts import build_module, load_program, load_weights, save_program, save_weights
from tests.support.models import SmallMLP


def test_round_trip_reproduces_the_module_exactly(tmp_path: Path) -> None:
    module = SmallMLP(seed=3).eval()
    x = torch.randn(5, 16)
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    save_program(program, tmp_path / "program.pt2")
    save_weights(dict(module.state_dict()), {"hidden.weight"}, tmp_path / "weights.safetensors")
    assert (tmp_path / "program.pt2").stat().st_size < 64 * 1024  # architecture only, no weights inside
    stored = load_file(str(tmp_path / "weights.safetensors"))
    assert set(stored) == {"hidden.weight.values", "hidden.weight.mask", "hidden.bias", "head.weight", "head.bias"}
    assert stored["hidden.weight.values"].shape == (32, 8) and stored["hidden.weight.mask"].shape == (32, 2)
    weights = load_weights(tmp_path / "weights.safetensors")
    assert weights.sparse == {"hidden.weight"}
    rebuilt = build_module(load_program(tmp_path / "program.pt2"), weights)
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), module(x))
        assert rebuilt(torch.randn(9, 16)).shape == (9, 4)  # the batch dimension stayed dynamic


def test_saving_does_not_disturb_the_program(tmp_path: Path) -> None:
    module = SmallMLP().eval()
    x = torch.randn(2, 16)
    program = torch.export.export(module, (x,))
    save_program(program, tmp_path / "p.pt2")
    assert torch.equal(program.module()(x), module(x))


def test_mismatched_weights_are_named(tmp_path: Path) -> None:
    module = SmallMLP().eval()
    program = torch.export.export(module, (torch.randn(2, 16),))
    tensors = dict(module.state_dict())
    del tensors["head.bias"]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="head.bias"):
        build_module(program, load_weights(tmp_path / "w.safetensors"))


def test_values_without_mask_are_rejected(tmp_path: Path) -> None:
    save_file({"w.values": torch.zeros(4, 8)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="w.mask"):
        load_weights(tmp_path / "w.safetensors")
