"""Calibration augmentation for text: more varied token statistics from the same few hundred sentences.

A user calibrates on the text they have (say, code docstrings) and then serves other text. Recovery fitted on the
calibration tokens alone learns their distribution; on unseen vocabulary the pruned model drifts. Each augmented
copy of a tokenized batch has `fraction` of its real tokens (never [CLS]/[SEP]-style specials, never padding)
replaced by tokens drawn uniformly from the rest of the vocabulary, and its interior cut into three spans whose order
is rotated, so word order cues vary too. The dense model defines the target on every copy, so no labels are needed.
Seeded per copy: the same calibration file gives the same augmented batches.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from server.convert.calibration import Batch


def augmented(batches: list[Batch], copies: int, fraction: float, vocab_size: int, special_ids: list[int],
              seed: int = 0) -> list[Batch]:
    """`copies` augmented versions of every text batch (batches without input_ids/token mask are skipped)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"replacement fraction must be in [0, 1], got {fraction}")
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[i for i in special_ids if 0 <= i < vocab_size]] = False
    pool = allowed.nonzero().squeeze(1)
    out: list[Batch] = []
    for copy in range(copies):
        generator = torch.Generator().manual_seed(seed + 1000 * copy)
        for batch in batches:
            ids = batch.inputs.get("input_ids")
            if ids is None or batch.token_mask is None:
                continue
            out.append(replace(batch, inputs={**batch.inputs, "input_ids": _augment_ids(
                ids, batch.token_mask, fraction, pool, generator)}))
    return out


def _augment_ids(ids: torch.Tensor, mask: torch.Tensor, fraction: float, pool: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    ids = ids.clone()
    for row in range(ids.shape[0]):
        length = int(mask[row].sum())
        interior = ids[row, 1:length - 1]  # a view: keeps the first and last real token (specials) in place
        n = interior.numel()
        if n == 0:
            continue
        if n >= 6:
            cuts = sorted(torch.randperm(n - 1, generator=generator)[:2].add(1).tolist())
            spans = [interior[:cuts[0]].clone(), interior[cuts[0]:cuts[1]].clone(), interior[cuts[1]:].clone()]
            interior.copy_(torch.cat(spans[1:] + spans[:1]))
        chosen = torch.rand(n, generator=generator) < fraction
        picks = pool[torch.randint(len(pool), (int(chosen.sum()),), generator=generator)]
        interior[chosen] = picks.to(ids.dtype)
    return ids
