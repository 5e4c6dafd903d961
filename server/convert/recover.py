"""Recovery after the 2:4 masks are chosen: refit the kept weights, then distil. Masks never move.

One-shot methods pick masks well but leave accuracy on the table (MiniLM: SparseGPT ~0.78 embedding cosine on text
unlike its calibration). Label-free steps close most of the gap:
1. `refit`: per output row, least squares over the kept input columns against the dense layer's output on the
   same inputs: w_K = (H_KK + damp I)^-1 (H w_dense)_K, with H the calibration Hessian the method already built.
2. `distil` per unit (transformer block): Adam on the unit's kept weights, biases and LayerNorm parameters so its
   output on the *pruned* model's inputs matches the dense model's output on the dense inputs (padding excluded):
   each block learns to undo the error that reaches it, not just its own (sequential reconstruction).
3. a final whole-model pass (`final_steps`) on the model's own outputs (the pooled sentence embedding and the last
   hidden state for an encoder), all kept weights trainable at once: block-wise matching leaves cross-block error.
Gradients and weights are re-masked after every step, so the result is still exactly 2:4. Steps are counted, never
timed, so a conversion is deterministic; the calibration set is cycled in file-derived order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
from tqdm import tqdm

from server.convert.methods import LayerStats


@dataclass(frozen=True)
class RecoverOptions:
    steps: int = 300  # Adam steps per unit (block); 0 = refit only
    final_steps: int = 0  # whole-model steps after the last block
    # 8e-4 and 3 copies since session 10 (bench/RESULTS.md): 2e-4 and 1 left ~0.016 of out-of-distribution cosine
    # on the table at the same step count; more copies add variety, not steps (the steps cycle over more batches)
    learning_rate: float = 8e-4
    final_learning_rate: float = 5e-5
    augment: int = 3  # augmented copies of each calibration text sample (token replacement + span shuffle)
    replace_fraction: float = 0.3
    train_norms: bool = True  # LayerNorm weights/biases of the unit are trainable too
    damp: float = 0.01
    rows_per_solve: int = 64
    bf16: bool = False  # distillation's forward and backward under CPU bf16 autocast (see `distil`)


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
        out[start:start + rows_per_solve].scatter_(1, idx, _solve_spd(system, rhs).squeeze(-1))
    return (out.to(dense.dtype) * mask) + 0.0


def _solve_spd(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve the damped (so symmetric positive definite) systems by Cholesky in float64: no pivoting, which
    LU's batched path got wrong in one full-suite run (a pivots error on a valid MNIST Hessian, with zero
    pixel columns); a system Cholesky still refuses falls back to least squares."""
    system64, rhs64 = system.to(torch.float64), rhs.to(torch.float64)
    factor, info = torch.linalg.cholesky_ex(system64)
    if bool((info != 0).any()):
        return torch.linalg.lstsq(system64, rhs64).solution.to(torch.float32)
    return torch.cholesky_solve(rhs64, factor).to(torch.float32)


def relative_mse(output: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """||output - target||^2 / ||target||^2 over real tokens (padding rows dropped when `keep` fits)."""
    diff = output - target
    if keep is not None and diff.dim() == 3 and diff.shape[:2] == keep.shape:
        diff, target = diff[keep], target[keep]
    return diff.pow(2).mean() / target.pow(2).mean().clamp(min=1e-12)


def output_loss(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                token_mask: torch.Tensor | None) -> torch.Tensor:
    """1 - cosine of the sentence embedding (what a user compares) + relative MSE of every other float output."""
    loss = torch.zeros(())
    for key, value in target.items():
        if not value.is_floating_point():
            continue
        if key == "sentence_embedding":
            loss = loss + (1.0 - torch.nn.functional.cosine_similarity(out[key], value, dim=-1)).mean()
        else:
            loss = loss + relative_mse(out[key], value, token_mask)
    return loss


Output = TypeVar("Output")  # what one unit returns: a tensor (a block) or the model's named outputs


def _float32(output: Any) -> Any:
    """A unit's output (a tensor, or a dict of them) with its bf16 tensors back in float32."""
    if isinstance(output, dict):
        return {k: _float32(v) for k, v in output.items()}
    if isinstance(output, torch.Tensor) and output.dtype == torch.bfloat16:
        return output.float()
    return output


def distil(run: Callable[[int], Output], loss_of: Callable[[int, Output], torch.Tensor], count: int,
           masks: list[torch.Tensor | None],
           weights: list[torch.Tensor], others: list[torch.Tensor], steps: int, learning_rate: float,
           label: str = "distilling", show_progress: bool = False, bf16: bool = False) -> list[float]:
    """`steps` Adam steps on `weights` (kept slots only, per `masks`) and `others` (biases, norms) lowering
    loss_of(i, run(i)), cycling i over the `count` batches; linear LR decay to 0. Returns the loss per pass over
    the batches (the last pass may be partial).

    `bf16`: run(i) and its backward under torch's CPU autocast (GEMMs in bfloat16, ~1.5x faster per step on an
    avx512_bf16 CPU: bench/RESULTS.md, session 8), the loss on float32 outputs; weights, gradients' accumulation
    and Adam's state stay float32, so the masks and the update rule are the same. Opt-in (`--recover-bf16`): the
    speed depends on the CPU, and the default result stays bit-for-bit what fp32 gives."""
    params = weights + others
    if steps <= 0 or count == 0 or not params:
        return []
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    losses: list[float] = []
    running, seen = 0.0, 0
    try:
        for step in tqdm(range(steps), desc=label, unit="step", leave=False, disable=not show_progress):
            i = step % count
            optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    output = run(i)
                loss = loss_of(i, _float32(output) if bf16 else output)
                loss.backward()
            for w, m in zip(weights, masks, strict=True):
                if m is not None and w.grad is not None:
                    w.grad.mul_(m)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                for w, m in zip(weights, masks, strict=True):
                    if m is not None:
                        w.mul_(m).add_(0.0)  # Adam's moments can move a pruned slot; +0.0 also clears -0.0
            running, seen = running + float(loss.detach()), seen + 1
            if seen == count or step == steps - 1:
                losses.append(running / seen)
                running, seen = 0.0, 0
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return losses
