"""Recovery after the 2:4 masks are chosen: refit the kept weights, then distil them block by block. Masks never move.

One-shot methods pick masks well but leave accuracy on the table (MiniLM: SparseGPT ~0.8 embedding cosine). Two
cheap, label-free steps close most of the gap:
1. `refit`: per output row, least squares over the kept input columns against the dense layer's output on the
   same inputs: w_K = (H_KK + damp I)^-1 (H w_dense)_K, with H the calibration Hessian the method already built.
2. `distil`: a few Adam steps on the kept weights (and biases) of one block so its output on the pruned model's
   block inputs matches the dense model's block output, padding tokens excluded. Gradients and weights are
   re-masked after every step, so the result is still exactly 2:4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from server.convert.methods import LayerStats


@dataclass(frozen=True)
class RecoverOptions:
    epochs: int = 4
    learning_rate: float = 1e-4
    damp: float = 0.01
    rows_per_solve: int = 64


def refit(dense: torch.Tensor, mask: torch.Tensor, stats: LayerStats, damp: float = 0.01,
          rows_per_solve: int = 64) -> torch.Tensor:
    """The least-squares kept weights for `mask` (exactly 2 kept per group of 4, so every row keeps cols/2)."""
    rows, cols = dense.shape
    h = stats.hessian.to(torch.float32)
    h = h + torch.eye(cols) * (damp * torch.diagonal(h).mean().clamp(min=1e-12))
    target = dense.to(torch.float32) @ h  # row r: (H w_r)^T, since H is symmetric
    kept = mask.nonzero()[:, 1].reshape(rows, cols // 2)
    out = torch.zeros(rows, cols, dtype=torch.float32)
    for start in range(0, rows, rows_per_solve):
        idx = kept[start:start + rows_per_solve]
        system = h[idx.unsqueeze(-1), idx.unsqueeze(-2)]  # [r, k, k]
        rhs = torch.gather(target[start:start + rows_per_solve], 1, idx).unsqueeze(-1)
        solution = torch.linalg.solve(system, rhs).squeeze(-1)
        out[start:start + rows_per_solve].scatter_(1, idx, solution)
    return (out.to(dense.dtype) * mask) + 0.0


def distil(run: Callable[[int], torch.Tensor], targets: list[torch.Tensor], masks: list[torch.Tensor | None],
           weights: list[torch.Tensor], biases: list[torch.Tensor], token_masks: list[torch.Tensor | None],
           options: RecoverOptions) -> list[float]:
    """Train `weights` (masked by `masks`) and `biases` so run(i) matches targets[i]; returns per-epoch loss."""
    params = weights + biases
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=options.learning_rate)
    total_steps = options.epochs * len(targets)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(total_steps, 1))
    losses: list[float] = []
    try:
        for _ in range(options.epochs):
            epoch_loss = 0.0
            for i, target in enumerate(targets):
                optimizer.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    output = run(i)
                    diff = output - target
                    keep = token_masks[i]
                    if keep is not None and diff.dim() == 3 and diff.shape[:2] == keep.shape:
                        diff = diff[keep]
                    loss = diff.pow(2).mean() / target.pow(2).mean().clamp(min=1e-12)
                    loss.backward()
                for w, m in zip(weights, masks, strict=True):
                    if m is not None and w.grad is not None:
                        w.grad.mul_(m)
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    for w, m in zip(weights, masks, strict=True):
                        if m is not None:
                            w.mul_(m).add_(0.0)
                epoch_loss += float(loss.detach())
            losses.append(epoch_loss / max(len(targets), 1))
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return losses
