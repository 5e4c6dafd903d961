"""What each layer's calibration statistics are made of: real tokens only (padding never enters them), and inputs
that went through the already-pruned layers before it (SparseGPT's in-order rule), for an exported MLP (one
whole-model unit) and for a Hugging Face encoder (block by block). The expected statistics are computed here
independently, by hooking the model after the fact, and compared with what the pruner handed its method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.convert import hf
from server.convert.calibration import load_dataset
from server.convert.methods import LayerStats
from server.convert.prune import Pruner
from server.convert.selection import select
from server.convert.sources import Source, forward, load_source
from tests.unit.convert import tiny_models
from tests.unit.convert.tiny_models import input_stats, record_stats, relative_difference


def pruned_run(source: Source, batches: list, method: str = "sparsegpt") -> tuple[
        dict[str, LayerStats | None], dict[str, LayerStats]]:
    """Prune `source` in place; returns (statistics each layer was pruned with, its input statistics on the dense
    model measured beforehand, both by weight name)."""
    decisions = select(source.targets, source.heads, [], [])
    modules = {d.target.weight_name: d.target.hook for d in decisions if d.sparse}
    dense = input_stats(modules, [lambda b=b: forward(source, b.inputs) for b in batches],
                        [b.token_mask for b in batches])
    pruner = Pruner(source, decisions, method, None, show_progress=False)
    recorded = record_stats(pruner)
    pruner.run(batches)
    assert set(recorded) == set(modules)
    return recorded, dense


# -- an exported MLP: one unit, layers pruned one after the other ---------------------------------------------------
def test_each_mlp_layer_is_calibrated_on_the_outputs_of_the_already_pruned_layers(tmp_path: Path) -> None:
    tiny_models.write_mlp(tmp_path)
    source = load_source(tmp_path / "mlp.pt2", 8)
    batches = load_dataset(tmp_path / "calibration.npz", source).batches

    recorded, dense = pruned_run(source, batches)

    targets = {t.weight_name: t.hook for t in source.targets}
    assert sorted(recorded) == ["fc1.weight", "fc2.weight", "fc3.weight"]  # the head stays dense
    after = input_stats({n: targets[n] for n in recorded}, [lambda b=b: forward(source, b.inputs) for b in batches],
                        [None] * len(batches))
    for name, stats in recorded.items():
        assert stats is not None and stats.samples == 96
        # What the layer saw is its input in the final model, where every layer before it is pruned...
        torch.testing.assert_close(stats.hessian, after[name].hessian, rtol=1e-5, atol=1e-6)
    # ...which for fc2 and fc3 is not what the dense model feeds them (fc1 sees the raw data either way).
    torch.testing.assert_close(recorded["fc1.weight"].hessian, dense["fc1.weight"].hessian)  # type: ignore[union-attr]
    for name in ("fc2.weight", "fc3.weight"):
        assert relative_difference(recorded[name].hessian, dense[name].hessian) > 1e-2  # type: ignore[union-attr]


# -- a Hugging Face encoder on padded text batches ------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("encoder")
    source = load_source(tiny_models.write_encoder(work / "tiny"), 8)
    (work / "calibration.txt").write_text("\n".join(tiny_models.LINES) + "\n", encoding="utf-8")
    batches = load_dataset(work / "calibration.txt", source).batches
    recorded, dense = pruned_run(source, batches)
    return {"source": source, "batches": batches, "recorded": recorded, "dense": dense}


def unpadded_stats(source: Source, names: list[str]) -> dict[str, LayerStats]:
    """Each layer's input statistics with every sentence run alone (no padding anywhere), on the pruned model."""
    targets = {t.weight_name: t.hook for t in source.targets}
    singles = [hf.tokenize(source.tokenizer, [line], True) for line in tiny_models.LINES]
    assert all(bool(s["attention_mask"].all()) for s in singles)
    return input_stats({n: targets[n] for n in names}, [lambda s=s: forward(source, s) for s in singles],
                       [None] * len(singles))


def test_padding_tokens_never_enter_the_statistics(encoder_run: dict) -> None:
    masks = [b.inputs["attention_mask"] for b in encoder_run["batches"]]
    assert sum(int((m == 0).sum()) for m in masks) > 20  # the calibration batches really are padded
    real_tokens = sum(int(m.sum()) for m in masks)
    recorded = encoder_run["recorded"]
    expected = unpadded_stats(encoder_run["source"], sorted(recorded))
    assert len(recorded) == 12
    for name, stats in recorded.items():
        assert stats is not None and stats.samples == real_tokens, name
        torch.testing.assert_close(stats.hessian, expected[name].hessian, rtol=1e-4, atol=1e-5, msg=name)


def test_encoder_blocks_are_calibrated_on_the_already_pruned_blocks(encoder_run: dict) -> None:
    recorded, dense = encoder_run["recorded"], encoder_run["dense"]
    first_group = {f"model.encoder.layer.0.attention.self.{n}.weight" for n in ("query", "key", "value")}
    for name, stats in recorded.items():
        difference = relative_difference(stats.hessian, dense[name].hessian)
        if name in first_group:  # q, k, v of block 0 read the embeddings: nothing before them is pruned
            assert difference < 1e-5, name
        else:
            assert difference > 1e-3, name
