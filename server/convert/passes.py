"""The calibration passes the pruner makes: which layers read the same tensor, one layer's input statistics, and the
inputs of the first block. Each is a forward run that a hook ends early (`Stop`) once it has what it needs, so a
layer's statistics cost only the part of the forward up to that layer.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from server.convert.calibration import Batch
from server.convert.layers import Target
from server.convert.methods import LayerStats
from server.convert.sources import Source, forward

Rows = Callable[[torch.Tensor], torch.Tensor]  # a layer's input as the rows its statistics count
BlockInputs = list[tuple[tuple[Any, ...], dict[str, Any]]]


class Stop(Exception):
    """Raised by a hook to end a forward pass once the statistics it needs are collected."""


def call_groups(run: Callable[[int], Any], targets: list[Target]) -> list[list[Target]]:
    """Layers in call order, grouped by the exact input tensor they read (q, k and v: one group), from one pass on
    batch 0; targets the pass never reaches are left out."""
    seen: list[tuple[Target, torch.Tensor]] = []
    handles = [t.hook.register_forward_pre_hook(
        lambda m, args, t=t: seen.append((t, args[0])) if all(s[0] is not t for s in seen) else None)
        for t in targets]
    try:
        with torch.no_grad():
            run(0)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[tuple[Target, torch.Tensor]]] = []
    for target, x in seen:
        for group in groups:
            if group[0][1] is x:
                group.append((target, x))
                break
        else:
            groups.append([(target, x)])
    return [[t for t, _ in g] for g in groups]


def layer_stats(run: Callable[[int], Any], count: int, target: Target, rows: Rows,
                show_progress: bool) -> LayerStats:
    """`target`'s input statistics over `count` batches, each pass stopped at the layer."""
    stats = LayerStats.empty(target.shape[1])

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        stats.add(rows(args[0]))
        raise Stop

    handle = target.hook.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for i in tqdm(range(count), desc=f"calibrating {target.name}", unit="batch", leave=False,
                          disable=not show_progress):
                try:
                    run(i)
                except Stop:
                    pass
    finally:
        handle.remove()
    return stats


def first_block_inputs(source: Source, batches: list[Batch], show_progress: bool) -> BlockInputs:
    """The (args, kwargs) the first transformer block receives for each batch (the model run up to it)."""
    captured: BlockInputs = []

    def catch(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, kwargs))
        raise Stop

    handle = source.blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="calibration inputs", unit="batch", disable=not show_progress):
                try:
                    forward(source, batch.inputs)
                except Stop:
                    pass
    finally:
        handle.remove()
    return captured
