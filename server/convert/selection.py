"""Which linear layers become 2:4 sparse, and why the others stay dense. The shape rule lives here, only here.

Shape rule: a weight [out_features, in_features] is prunable when both dims are multiples of 16 and at least 64.
Why: 2:4 compresses along in_features in groups of 4 and the storage mask packs 8 columns per byte; the sparse
Tensor Core kernels (CUTLASS / cuSPARSELt via torch.sparse.to_sparse_semi_structured) tile in multiples of 16 and
refuse or lose on tiny matrices. Shapes that pass here but miss a particular kernel's stricter minimum are kept dense
by the GPU runtime at load (design.md), so the stored format stays kernel-independent.
Output heads (a program's last linear; an HF model's linears outside its transformer blocks) stay dense by default:
they are small and the whole output depends on them. `--only GLOB` prunes just the matching layers (heads included
when named); `--skip GLOB` keeps matching layers dense. Globs match the layer name (e.g. `encoder.layer.*.query`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from server.convert.layers import Target

MULTIPLE = 16
MINIMUM = 64


@dataclass(frozen=True)
class Decision:
    target: Target
    sparse: bool
    reason: str  # why it stays dense ("" when sparse)


def shape_problem(shape: tuple[int, int]) -> str:
    """'' when a weight shape fits the 2:4 kernels, else the reason it does not."""
    rows, cols = shape
    for label, size in (("out_features", rows), ("in_features", cols)):
        if size % MULTIPLE:
            return f"{label} {size} is not a multiple of {MULTIPLE}"
        if size < MINIMUM:
            return f"{label} {size} is below {MINIMUM}"
    return ""


def select(targets: list[Target], heads: set[str], only: list[str], skip: list[str]) -> list[Decision]:
    """One decision per layer, in execution order."""
    decisions: list[Decision] = []
    for target in targets:
        named = any(fnmatchcase(target.name, g) for g in only)
        if only and not named:
            reason = "not matched by --only"
        elif any(fnmatchcase(target.name, g) for g in skip):
            reason = "matched by --skip"
        elif target.name in heads and not named:
            reason = "output head (--only names it to prune)"
        elif target.param.dim() != 2:
            reason = "not a 2-D weight"
        else:
            reason = shape_problem(target.shape)
        decisions.append(Decision(target, not reason, reason))
    return decisions
