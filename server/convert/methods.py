"""The 2:4 pruning methods. One function each, one signature: `(weight, stats) -> Pruned`.

Every method keeps exactly 2 of each group of 4 consecutive input weights (along dim 1, the dimension the sparse
Tensor Cores compress). They differ in how they score a weight and whether they update the kept ones:
- magnitude: |w|. Needs no data; the baseline.
- wanda: |w| * ||x_j||_2 (Sun et al. 2023): a small weight on a loud input channel matters more than its size says.
- sparsegpt: optimal-brain-surgeon with the calibration Hessian H = X^T X / n (Frantar & Alistarh 2023): columns are
  pruned left to right in 128-column blocks and each pruning error is pushed onto the not-yet-pruned columns, so the
  layer's output on the calibration data moves as little as possible.
Pruned slots are +0.0 (never -0.0) so the compressed format and `is_2_4` see exactly the kept pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

GROUP = 4
KEPT = 2


@dataclass
class LayerStats:
    """Second moment of a layer's inputs on the calibration data: H = sum(x x^T) / samples (cols x cols, fp64)."""

    hessian: torch.Tensor
    samples: int

    @classmethod
    def empty(cls, cols: int) -> "LayerStats":
        return cls(torch.zeros(cols, cols, dtype=torch.float64), 0)

    def add(self, rows: torch.Tensor) -> None:
        """Accumulate input rows [n, cols]; kept as a running mean so large n stays well scaled."""
        rows = rows.detach().reshape(-1, rows.shape[-1]).float()
        n = rows.shape[0]
        if n == 0:
            return
        total = self.samples + n
        self.hessian.mul_(self.samples / total).add_((rows.T @ rows).double(), alpha=1.0 / total)
        self.samples = total


@dataclass
class Pruned:
    """A method's answer: the new weight (zeros outside `mask`) and the kept-slot mask (2 per group of 4)."""

    weight: torch.Tensor
    mask: torch.Tensor


Method = Callable[[torch.Tensor, "LayerStats | None"], Pruned]


def _keep_top2(score: torch.Tensor) -> torch.Tensor:
    """Boolean mask keeping the 2 highest scores in each group of 4 (ties: lower index wins, deterministic)."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // GROUP, GROUP)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :KEPT]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return mask.reshape(rows, cols)


def _apply(weight: torch.Tensor, mask: torch.Tensor) -> Pruned:
    out = torch.where(mask, weight, torch.zeros((), dtype=weight.dtype)) + 0.0  # +0.0 turns any -0.0 into +0.0
    return Pruned(out.to(weight.dtype), mask)


def _check(weight: torch.Tensor) -> None:
    if weight.dim() != 2 or weight.shape[1] % GROUP:
        raise ValueError(f"2:4 pruning needs a 2-D weight whose input dim is a multiple of 4, "
                         f"got {tuple(weight.shape)}")


def magnitude(weight: torch.Tensor, stats: LayerStats | None = None) -> Pruned:
    """Keep the 2 largest |w| of each group of 4 along the input dimension."""
    _check(weight)
    return _apply(weight, _keep_top2(weight.abs().float()))


def wanda(weight: torch.Tensor, stats: LayerStats | None) -> Pruned:
    """Keep the 2 largest |w_ij| * ||x_j||_2 of each group of 4; needs calibration statistics."""
    _check(weight)
    if stats is None or stats.samples == 0:
        raise ValueError("wanda needs calibration statistics (no calibration inputs reached this layer)")
    norms = torch.diagonal(stats.hessian).clamp(min=0).sqrt().to(torch.float64)
    return _apply(weight, _keep_top2(weight.abs().to(torch.float64) * norms.unsqueeze(0)))


def sparsegpt(weight: torch.Tensor, stats: LayerStats | None, block_size: int = 128, damp: float = 0.01) -> Pruned:
    """SparseGPT 2:4 (OBS updates with the damped inverse Hessian, `block_size`-column lazy batches)."""
    _check(weight)
    if stats is None or stats.samples == 0:
        raise ValueError("sparsegpt needs calibration statistics (no calibration inputs reached this layer)")
    w = weight.detach().to(torch.float32).clone()  # the column sweep in fp32 (as the reference); inverse in fp64
    rows, cols = w.shape
    h = stats.hessian.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(cols, dtype=h.dtype) * (damp * torch.diagonal(h).mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).to(torch.float32)
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        w1 = w[:, start:end].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[start:end, start:end]
        mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(end - start):
            col = w1[:, i]
            d = hinv1[i, i]
            if i % GROUP == 0:
                score = w1[:, i:i + GROUP] ** 2 / torch.diagonal(hinv1)[i:i + GROUP].unsqueeze(0) ** 2
                drop = torch.argsort(score, dim=1, stable=True)[:, :GROUP - KEPT]
                mask1.scatter_(1, i + drop, True)
            q = col.clone()
            q[mask1[:, i]] = 0.0
            q1[:, i] = q
            e = (col - q) / d
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, start:end] = q1
        w[:, end:] -= err1 @ hinv[start:end, end:]
        pruned[:, start:end] = mask1
    return _apply(w.to(weight.dtype), ~pruned)


METHODS: dict[str, Method] = {"magnitude": magnitude, "wanda": wanda, "sparsegpt": sparsegpt}


def output_error(dense: torch.Tensor, sparse: torch.Tensor, stats: LayerStats | None) -> float | None:
    """||WX - W'X|| / ||WX|| on the calibration inputs, exactly, from H: tr(dW H dW^T) / tr(W H W^T)."""
    if stats is None or stats.samples == 0:
        return None
    w = dense.detach().to(torch.float64)
    delta = w - sparse.detach().to(torch.float64)
    num = float(((delta @ stats.hessian) * delta).sum())
    den = float(((w @ stats.hessian) * w).sum())
    return (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0
