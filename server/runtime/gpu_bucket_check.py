"""Whole-model check of the per-layer 2:4 choice, one captured batch bucket at a time (dispatch mode).

Per-layer timing (gpu_decision) times each GEMM alone. In the model a 2:4 layer also changes its neighbours'
work: torch's cuSPARSELt wrapper returns a transposed result that the next op reads strided or copies, and on
an H200 a token encoder whose layers each won alone at 32,768 rows ran at 0.50x of dense as a whole graph
(bench/RESULTS.md, GPU). So, for every bucket where any layer runs 2:4, the bucket's graph is timed as chosen
and again with every layer dense, and the bucket keeps 2:4 only if the whole graph is faster by the margin:
the served 2:4 model is then never slower than dense at a bucket by more than the timing noise.
"""

from __future__ import annotations

from typing import Any, Callable

from server.runtime.gpu_decision import DENSE, DISPATCH, SPARSE, LayerDecision
from server.runtime.gpu_graphs import GraphBuckets
from server.runtime.gpu_layers import SwitchLinear

# (bucket, layers running 2:4 in it) -> seconds per replay of that bucket's graph as currently captured
ModelTimer = Callable[[int, frozenset[str]], float]


def check_buckets(graphs: GraphBuckets, switches: dict[str, SwitchLinear], rows: dict[str, dict[int, int]],
                  decisions: list[LayerDecision], margin: float, timer: ModelTimer) -> list[dict[str, Any]]:
    """Flip to dense every bucket whose 2:4 graph does not beat the all-dense graph; returns one row per bucket
    checked (batch, layers, ms both ways, kernel kept) and updates `decisions` to what now runs."""
    by_layer = {d.layer: d for d in decisions}
    report: list[dict[str, Any]] = []
    flipped: dict[str, list[int]] = {}
    for bucket in graphs.buckets:
        sparse_here = {name: rows[name][bucket] for name, switch in switches.items()
                       if bucket in rows.get(name, {}) and switch.uses_sparse(rows[name][bucket])}
        if not sparse_here:
            continue
        layers = frozenset(sparse_here)
        sparse_seconds = timer(bucket, layers)
        _set(switches, sparse_here, sparse=False)
        graphs.recapture(bucket)
        dense_seconds = timer(bucket, frozenset())
        keep = sparse_seconds * (1.0 + margin) <= dense_seconds
        if keep:
            _set(switches, sparse_here, sparse=True)
            graphs.recapture(bucket)
        else:
            for name, layer_rows in sparse_here.items():
                flipped.setdefault(name, []).append(bucket)
                for choice in by_layer[name].buckets:
                    if choice.rows == layer_rows:
                        choice.kernel = DENSE
        report.append({"batch": bucket, "sparse_layers": len(layers), "sparse_ms": round(sparse_seconds * 1e3, 4),
                       "dense_ms": round(dense_seconds * 1e3, 4), "kernel": SPARSE if keep else DENSE})
    for name, batches in flipped.items():
        _restate(by_layer[name], batches)
    return report


def _set(switches: dict[str, SwitchLinear], rows: dict[str, int], sparse: bool) -> None:
    for name, layer_rows in rows.items():
        switches[name].set_bucket_kernel(layer_rows, sparse)


def _restate(decision: LayerDecision, lost: list[int]) -> None:
    """A layer whose buckets the check turned dense says so in its kernel and reason."""
    wins = [b.kernel == SPARSE for b in decision.buckets]
    note = f"whole-model check: the 2:4 graph lost at batch {', '.join(map(str, lost))}"
    decision.kernel = DISPATCH if any(wins) else DENSE
    decision.reason = f"{decision.reason}; {note}" if any(wins) else note
