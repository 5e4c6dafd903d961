"""Tiny real sources for converter tests, built in seconds and offline: a randomly initialised BERT saved as a
Hugging Face directory (config.json, model.safetensors, a WordPiece tokenizer) and an exported 4-layer MLP with
calibration arrays; plus helpers that collect each linear layer's input second moment independently of the pruner."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from server.convert.methods import LayerStats, Pruned
from server.convert.prune import Pruner

WORDS = ("the a cat dog sat on mat ran far away quickly slowly big small red blue house tree under over near "
         "green old new bird flew").split()
LINES = ["the cat sat", "a big red dog ran far away quickly", "bird", "the old green house under the tree",
         "a small blue bird flew over the big house near the old tree", "dog sat on mat", "new cat",
         "the dog ran", "a cat sat on the mat near the dog", "red bird flew away", "big tree",
         "the small dog ran slowly under the old blue mat", "cat", "a new house near the tree", "the bird sat",
         "dog dog dog", "a big old tree over the house", "blue cat ran quickly", "the mat",
         "a small red bird flew far away over the green tree"]


def write_encoder(directory: Path) -> Path:
    """Write the tiny encoder into `directory` (hidden 64, 2 layers: every linear passes the 2:4 shape rule)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    # The vocabulary as a dict: transformers 5 ignores `vocab_file=` here and would map every word to [UNK].
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(directory))
    BertTokenizerFast(vocab=vocab).save_pretrained(str(directory))
    return directory


class Mlp(nn.Module):
    """fc1..fc3 pass the 2:4 shape rule; `head` is the program's last linear, kept dense by default."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 64)
        self.head = nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))))


def write_mlp(directory: Path, samples: int = 96) -> tuple[Path, Path]:
    """mlp.pt2 (dynamic batch, input `x`) and calibration.npz (correlated inputs) in `directory`."""
    torch.manual_seed(0)
    program = torch.export.export(Mlp().eval(), (torch.randn(4, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(directory / "mlp.pt2"))
    g = np.random.default_rng(0)
    x = g.standard_normal((samples, 16)) @ g.standard_normal((16, 64)) + 0.1 * g.standard_normal((samples, 64))
    np.savez(directory / "calibration.npz", x=x.astype(np.float32))
    return directory / "mlp.pt2", directory / "calibration.npz"


def input_stats(modules: dict[str, nn.Module], calls: list[Callable[[], Any]],
                masks: list[torch.Tensor | None]) -> dict[str, LayerStats]:
    """Second moment of each module's input over `calls` (each runs the model once), computed independently of
    the pruner; rows where the call's mask is False (padding) are dropped."""
    stats: dict[str, LayerStats] = {}
    current: list[torch.Tensor | None] = [None]

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def collect(module: nn.Module, args: tuple[Any, ...]) -> None:
            x, mask = args[0], current[0]
            rows = x[mask] if mask is not None and x.dim() == 3 else x.reshape(-1, x.shape[-1])
            stats.setdefault(name, LayerStats.empty(rows.shape[-1])).add(rows)
        return collect

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in modules.items()]
    try:
        with torch.no_grad():
            for call, mask in zip(calls, masks, strict=True):
                current[0] = mask
                call()
    finally:
        for h in handles:
            h.remove()
    return stats


def record_stats(pruner: Pruner) -> dict[str, LayerStats | None]:
    """Wrap the pruner's (real) method so each layer's calibration statistics are kept, by weight name."""
    dense = {t.weight_name: t.param.detach().clone() for t in pruner.selected}
    seen: dict[str, LayerStats | None] = {}
    method = pruner.method

    def recording(weight: torch.Tensor, stats: LayerStats | None) -> Pruned:
        name = next(n for n, w in dense.items() if n not in seen and torch.equal(w, weight))
        seen[name] = None if stats is None else LayerStats(stats.hessian.clone(), stats.samples)
        return method(weight, stats)

    pruner.method = recording
    return seen


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
