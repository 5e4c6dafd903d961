"""What the calibration data covers: sample count, token lengths and vocabulary, with warnings when it is thin.

Recovery fits the pruned model to the dense one *on the calibration data*; text unlike it (other words, other
lengths) is where agreement drops (MiniLM calibrated on docstrings: 0.83 mean cosine on other prose before this
work). The figures here let a user see that before serving: how many samples, how long, how many distinct tokens,
what share of the vocabulary, and, when evaluation text is given, what share of its tokens calibration ever saw.
Warnings are advice, never errors: a small or narrow calibration set still converts.
"""

from __future__ import annotations

from typing import Any

import torch

from server.convert.calibration import Dataset

SMALL = 128  # fewer calibration samples than this: warn
NARROW = 2000  # fewer distinct calibration tokens than this: warn
UNSEEN = 0.9  # evaluation tokens calibration saw below this share: warn


def _tokens(data: Dataset) -> tuple[list[int], torch.Tensor] | None:
    """(real tokens per sample, every real token id) for text data; None for array data."""
    lengths: list[int] = []
    ids: list[torch.Tensor] = []
    for batch in data.batches:
        tokens = batch.inputs.get("input_ids")
        if tokens is None or batch.token_mask is None:
            return None
        lengths += batch.token_mask.sum(dim=1).tolist()
        ids.append(tokens[batch.token_mask])
    return lengths, torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int64)


def coverage(calibration: Dataset, vocab_size: int | None, evaluation: Dataset | None = None) -> dict[str, Any]:
    """The report's `calibration.coverage` section (figures + `warnings`, a list of sentences)."""
    result: dict[str, Any] = {"samples": calibration.samples}
    warnings: list[str] = []
    if calibration.samples < SMALL:
        warnings.append(f"only {calibration.samples} calibration samples (at least {SMALL}, better 256+, are "
                        "advised): recovery may fit them and not the data you serve")
    tokens = _tokens(calibration)
    if tokens is not None:
        lengths, ids = tokens
        distinct = torch.unique(ids)
        ordered = sorted(lengths)
        result.update({
            "tokens": int(ids.numel()), "distinct_tokens": int(distinct.numel()),
            "length_mean": round(sum(lengths) / len(lengths), 2), "length_min": ordered[0],
            "length_median": ordered[len(ordered) // 2], "length_max": ordered[-1]})
        if vocab_size:
            result["vocabulary_coverage"] = round(distinct.numel() / vocab_size, 6)
        if distinct.numel() < NARROW:
            warnings.append(f"calibration uses only {distinct.numel()} distinct tokens: narrow; agreement on other "
                            "text will be lower than on it (pass several --calibration files of the text you serve)")
        seen = _tokens(evaluation) if evaluation is not None else None
        if seen is not None and seen[1].numel():
            share = float(torch.isin(seen[1], distinct).double().mean())
            result["evaluation_tokens_seen"] = round(share, 6)
            if share < UNSEEN:
                warnings.append(f"{1 - share:.0%} of the evaluation tokens never occur in the calibration data")
    result["warnings"] = warnings
    return result
