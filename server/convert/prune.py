"""Prune a source in order, block by block, so every layer is calibrated on inputs from the already-pruned layers.

Units: a model with transformer blocks is processed one block at a time (the SparseGPT recipe): the block's inputs
are cached for the pruned model and for the dense model. Inside a unit, layers that read the same tensor (q, k, v)
form a group; groups are pruned in execution order, each from a fresh pass whose statistics include the earlier
groups' pruning (the pass stops as soon as the group's input has been seen). A model without blocks is one unit.
With recovery, each unit's kept weights are refit and distilled against the dense unit's outputs before the next
unit's inputs are computed. Layers outside every block (e.g. a named head) are handled by a final whole-model unit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from server.convert.calibration import Batch
from server.convert.layers import Target
from server.convert.methods import METHODS, LayerStats, output_error
from server.convert.passes import call_groups, first_block_inputs, layer_stats
from server.convert.recover import RecoverOptions, distil, output_loss, refit, relative_mse
from server.convert.selection import Decision
from server.convert.sources import Source, forward

NORMS = (nn.LayerNorm,)  # norm modules whose affine parameters recovery may train


@dataclass
class LayerOutcome:
    name: str
    zero_fraction: float
    output_error: float | None
    samples: int


@dataclass
class PruneOutcome:
    layers: dict[str, LayerOutcome] = field(default_factory=dict)  # by weight name
    distil_loss: dict[str, list[float]] = field(default_factory=dict)  # by unit name
    seconds: float = 0.0


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _flat_outputs(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(v.shape[0], -1) for v in outputs.values() if v.is_floating_point()], dim=1)


class Pruner:
    def __init__(self, source: Source, decisions: list[Decision], method: str,
                 recover: RecoverOptions | None, show_progress: bool = True) -> None:
        self.source = source
        self.method = METHODS[method]
        self.recover = recover
        self.selected = [d.target for d in decisions if d.sparse]
        self.show_progress = show_progress
        self.token_mask: torch.Tensor | None = None
        self.outcome = PruneOutcome()
        self.masks: dict[str, torch.Tensor] = {}

    # -- passes -------------------------------------------------------------------------------------------
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.token_mask
        if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
            return x[mask]
        return x.reshape(-1, x.shape[-1])

    # -- one unit -------------------------------------------------------------------------------------------
    def _others(self, targets: list[Target], unit: nn.Module) -> list[torch.Tensor]:
        """What distillation trains besides the kept weights: the targets' biases, and the unit's norms."""
        assert self.recover is not None
        found = [b for t in targets if (b := _bias_of(self.source, t)) is not None]
        if self.recover.train_norms:
            found += [p for m in unit.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)]
        unique: dict[int, torch.Tensor] = {}
        for p in found:
            unique.setdefault(id(p), p)
        return list(unique.values())

    def _prune_unit(self, name: str, run: Callable[[int], Any], masks_of: list[torch.Tensor | None],
                    targets: list[Target], dense_outputs: list[torch.Tensor] | None, bar: tqdm,
                    unit: nn.Module) -> None:
        count = len(masks_of)
        groups = call_groups(run, targets)
        called = {id(t) for g in groups for t in g}
        pending: list[tuple[Target, torch.Tensor, LayerStats | None]] = []
        for target in targets:
            if id(target) not in called:  # never reached by the calibration data: stats-free methods only
                pending.append((target, target.param.detach().clone(), None))
        for group in groups:
            group_stats = layer_stats(run, count, group[0], self._rows, self.show_progress)
            for target in group:
                dense = target.param.detach().clone()
                pruned = self.method(dense, group_stats)
                weight = pruned.weight
                if self.recover is not None:
                    weight = refit(dense, pruned.mask, group_stats, self.recover.damp, self.recover.rows_per_solve)
                with torch.no_grad():
                    target.param.copy_(weight)
                self.masks[target.weight_name] = pruned.mask
                pending.append((target, dense, group_stats))
                bar.update(1)
        for target, dense, _ in pending:
            if target.weight_name not in self.masks:  # unreached layer
                pruned = self.method(dense, None)
                with torch.no_grad():
                    target.param.copy_(pruned.weight)
                self.masks[target.weight_name] = pruned.mask
                bar.update(1)
        if self.recover is not None and dense_outputs is not None and pending:
            weights = [t.param for t, _, _ in pending]
            targets_of = dense_outputs
            self.outcome.distil_loss[name] = distil(
                run, lambda i, out: relative_mse(out, targets_of[i], masks_of[i]), count,
                [self.masks[t.weight_name] for t, _, _ in pending], weights,
                self._others([t for t, _, _ in pending], unit), self.recover.steps, self.recover.learning_rate,
                f"distilling {name}", self.show_progress, self.recover.bf16)
        for target, dense, stats in pending:
            final = target.param.detach()
            self.outcome.layers[target.weight_name] = LayerOutcome(
                target.name, float((final == 0).float().mean()), output_error(dense, final, stats),
                0 if stats is None else stats.samples)

    # -- the whole model ------------------------------------------------------------------------------------
    def run(self, batches: list[Batch]) -> PruneOutcome:
        start = time.perf_counter()
        token_masks = [b.token_mask for b in batches]
        final_targets = None
        if self.recover is not None and self.recover.final_steps > 0 and self.source.blocks:
            with torch.no_grad():
                final_targets = [forward(self.source, b.inputs) for b in batches]
        with tqdm(total=len(self.selected), desc="pruning layers", unit="layer", disable=not self.show_progress) as bar:
            remaining = list(self.selected)
            if self.source.blocks:
                remaining = self._run_blocks(batches, token_masks, remaining, bar)
            if remaining:
                def run_model(i: int) -> torch.Tensor:
                    self.token_mask = token_masks[i]
                    return _flat_outputs(forward(self.source, batches[i].inputs))

                dense = None
                if self.recover is not None:
                    with torch.no_grad():
                        dense = [run_model(i) for i in range(len(batches))]
                self._prune_unit("model", run_model, token_masks, remaining, dense, bar, self.source.model)
        if final_targets is not None:
            self._final(batches, final_targets)
        self.outcome.seconds = time.perf_counter() - start
        return self.outcome

    def _final(self, batches: list[Batch], targets: list[dict[str, torch.Tensor]]) -> None:
        """Whole-model distillation on the model's outputs, every kept weight, bias and norm trainable at once."""
        assert self.recover is not None

        def loss_of(i: int, out: dict[str, torch.Tensor]) -> torch.Tensor:
            return output_loss(out, targets[i], batches[i].token_mask)

        pruned = [t for t in self.selected if t.weight_name in self.masks]
        self.outcome.distil_loss["model"] = distil(
            lambda i: forward(self.source, batches[i].inputs), loss_of, len(batches),
            [self.masks[t.weight_name] for t in pruned], [t.param for t in pruned],
            self._others(pruned, self.source.model), self.recover.final_steps, self.recover.final_learning_rate,
            "distilling the whole model", self.show_progress, self.recover.bf16)

    def _run_blocks(self, batches: list[Batch], token_masks: list[torch.Tensor | None], remaining: list[Target],
                    bar: tqdm) -> list[Target]:
        captured = first_block_inputs(self.source, batches, self.show_progress)
        dense_in = list(captured)
        pruned_in = list(captured)
        for index, block in enumerate(self.source.blocks):
            inside = {id(m) for m in block.modules()}
            targets = [t for t in remaining if id(t.hook) in inside]
            remaining = [t for t in remaining if id(t.hook) not in inside]
            with torch.no_grad():
                dense_out = [_first(block(*a, **k)) for a, k in dense_in]

            def run_block(i: int, block: nn.Module = block,
                          inputs: list[tuple[tuple[Any, ...], dict[str, Any]]] = pruned_in) -> torch.Tensor:
                self.token_mask = token_masks[i]
                args, kwargs = inputs[i]
                return _first(block(*args, **kwargs))

            if targets:
                self._prune_unit(f"block {index}", run_block, token_masks, targets, dense_out, bar, block)
            with torch.no_grad():
                pruned_out = [run_block(i) for i in range(len(batches))]
            dense_in = [_replace_hidden(a, k, o) for (a, k), o in zip(dense_in, dense_out, strict=True)]
            pruned_in = [_replace_hidden(a, k, o) for (a, k), o in zip(pruned_in, pruned_out, strict=True)]
        return remaining


def _replace_hidden(args: tuple[Any, ...], kwargs: dict[str, Any], hidden: torch.Tensor) -> tuple[Any, Any]:
    if args:
        return (hidden,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _bias_of(source: Source, target: Target) -> torch.Tensor | None:
    bias = getattr(target.hook, "bias", None)
    if isinstance(bias, torch.Tensor):
        return bias
    if target.weight_name.endswith(".weight"):
        try:
            return source.model.get_parameter(target.weight_name[: -len(".weight")] + ".bias")
        except AttributeError:
            return None
    return None
