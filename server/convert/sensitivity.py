"""Per-layer sensitivity: how much model-level agreement pruning one layer alone costs, measured cheaply.

For each layer that would become 2:4, that layer alone is pruned with Wanda scores (|w| x input norm, from one dense
pass over a few calibration batches; no Hessian, no recovery), the model is run on the same batches, and the loss is
1 - mean cosine between its main output (the sentence embedding when there is one) and the dense output. The
layer's weight is then restored. Cheap (one forward per layer on `batches` batches) and only a ranking: layers
interact, and recovery shrinks every figure. `--keep-dense K` leaves the K highest-ranked layers dense.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from tqdm import tqdm

from server.convert.calibration import Batch
from server.convert.methods import LayerStats, wanda
from server.convert.selection import Decision
from server.convert.sources import Source, forward

BATCHES = 2  # calibration batches the measurement runs on (16 samples each)


def _main(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    if "sentence_embedding" in outputs:
        return outputs["sentence_embedding"]
    first = next(v for v in outputs.values() if v.is_floating_point())
    return first.reshape(first.shape[0], -1)


def _agreement(source: Source, batches: list[Batch], reference: list[torch.Tensor]) -> float:
    cosines = [torch.nn.functional.cosine_similarity(_main(forward(source, b.inputs)).double(), r, dim=1)
               for b, r in zip(batches, reference, strict=True)]
    return float(torch.cat(cosines).mean())


def sensitivity(source: Source, decisions: list[Decision], batches: list[Batch],
                show_progress: bool = False) -> dict[str, float]:
    """{weight name: 1 - mean cosine with only that layer 2:4}, for every sparse decision."""
    batches = batches[:BATCHES]
    sparse = [d.target for d in decisions if d.sparse]
    stats = {t.weight_name: LayerStats.empty(t.shape[1]) for t in sparse}
    mask: list[torch.Tensor | None] = [None]

    def collect(name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            keep = mask[0]
            rows = x[keep] if keep is not None and x.dim() == 3 and x.shape[:2] == keep.shape else x
            rows = rows.reshape(-1, x.shape[-1]).double()
            entry = stats[name]  # only the diagonal is used: keep it as a diagonal matrix to stay cheap
            total = entry.samples + rows.shape[0]
            diagonal = torch.diagonal(entry.hessian)
            diagonal.mul_(entry.samples / max(total, 1)).add_(rows.pow(2).sum(dim=0) / max(total, 1))
            entry.samples = total
        return hook

    handles = [t.hook.register_forward_pre_hook(collect(t.weight_name)) for t in sparse]
    try:
        with torch.no_grad():
            reference = []
            for b in batches:
                mask[0] = b.token_mask
                reference.append(_main(forward(source, b.inputs)).double())
    finally:
        for h in handles:
            h.remove()
    result: dict[str, float] = {}
    with torch.no_grad():
        for target in tqdm(sparse, desc="layer sensitivity", unit="layer", leave=False, disable=not show_progress):
            dense = target.param.detach().clone()
            entry = stats[target.weight_name]
            pruned = wanda(dense, entry) if entry.samples else None
            if pruned is None:
                continue
            target.param.copy_(pruned.weight)
            try:
                result[target.weight_name] = max(0.0, 1.0 - _agreement(source, batches, reference))
            finally:
                target.param.copy_(dense)
    return result


def keep_dense(decisions: list[Decision], losses: dict[str, float], count: int) -> list[Decision]:
    """The decisions with the `count` most sensitive sparse layers turned dense (ties: execution order)."""
    if count < 0:
        raise ValueError(f"--keep-dense must be 0 or more, got {count}")
    ranked = sorted((d for d in decisions if d.sparse and d.target.weight_name in losses),
                    key=lambda d: -losses[d.target.weight_name])
    chosen = {id(d): rank for rank, d in enumerate(ranked[:count], start=1)}
    return [replace(d, sparse=False, reason=f"kept dense: sensitivity rank {chosen[id(d)]} (--keep-dense)")
            if id(d) in chosen else d for d in decisions]
