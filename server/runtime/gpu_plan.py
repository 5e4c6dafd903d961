"""The per-layer half of a GPU load: decide each 2:4 layer's kernel by timing, then convert the layer to it.

gpu.py owns the model as a whole (probe, warmup, graph capture, serving); this module owns one layer at a time,
once the probe has said which row counts each layer sees. `decide` turns the candidates this layer may use
(gpu_choice) and their measured times into a LayerDecision (gpu_decision); `apply` builds the winning kernel
from the real weight (or, for FP8/INT8, from the codes and scales as stored) and sets the switch's dispatch.
Any kernel failure here leaves that one layer dense and records why, instead of failing the whole load: a
kernel refusing a shape the rules allow is a library limit, not a broken model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from server.runtime.gpu_choice import AliasTimer, layer_candidates, rank_alternatives
from server.runtime.gpu_decision import DENSE, SPARSE, LayerDecision, LayerShape, Timer, decide_layer
from server.runtime.gpu_layers import QuantFactory, SparseFactory, SwitchLinear
from server.sparsity.quantize import QuantizedLayer


def first_line(exc: BaseException) -> str:
    """An exception as one short line, for a decision table or client message (CUDA errors run to pages)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


@dataclass(frozen=True)
class LayerPlanner:
    """What choosing and converting a layer needs from the load: its switches, the stored quantized layers, the
    FP8/INT8 kernels this GPU runs (by gpu_choice name), and the device, dtype and 2:4 backend."""

    switches: dict[str, SwitchLinear]
    quantized: dict[str, QuantizedLayer]
    quant_kernels: dict[str, QuantFactory]
    device: torch.device
    dtype: torch.dtype
    backend: str

    def decide(self, name: str, rows: dict[int, int], timer: Timer, keep_dense: bool,
               margin: float) -> LayerDecision:
        """Time `name`'s candidates at the row counts the probe saw (`rows`: batch size -> rows) and choose."""
        switch = self.switches.get(name)
        if switch is None:
            return LayerDecision(name, LayerShape(0, 0), "dense", "not used by a linear call in the program")
        shape = LayerShape(switch.out_features, switch.in_features)
        layer = self.quantized.get(name)
        candidates, problems = layer_candidates(shape, self.dtype, self.backend,
                                                None if layer is None else layer.scheme, list(self.quant_kernels))
        if not candidates:
            return LayerDecision(name, shape, DENSE, "; ".join(problems.values()) or "no 2:4 kernel")
        try:
            ranking = rank_alternatives(shape, list(rows.values()), timer, candidates, problems)
            if ranking.best is None:
                reason = "; ".join(ranking.dropped.values())
                decision = decide_layer(name, shape, rows, timer, keep_dense, margin, reason or None)
            else:
                decision = decide_layer(name, shape, rows, AliasTimer(timer, ranking.best), keep_dense, margin)
                decision.alternative = ranking.best
            decision.ranking = ranking.as_dict()
            return decision
        except RuntimeError as exc:  # a kernel refusing a shape our rules allow: that layer stays dense, and says why
            return LayerDecision(name, shape, DENSE, f"2:4 kernel failed while timing: {first_line(exc)}")

    def apply(self, decision: LayerDecision, factory: SparseFactory, keep_dense: bool, release: bool) -> None:
        """Build the decided kernel from the real weight and set the switch's per-bucket dispatch; `release`
        drops the weight a bucket no longer uses (False while the whole-model check still needs both)."""
        switch = self.switches.get(decision.layer)
        if switch is None:
            return
        sparse_rows = set(decision.sparse_rows())
        if sparse_rows:
            try:
                switch.attach_sparse(self._factory_for(decision, factory))
                self._prepare(switch, [b.rows for b in decision.buckets])
            except RuntimeError as exc:  # conversion of the real weight failed: serve it dense, record why
                decision.kernel, decision.reason = DENSE, f"2:4 conversion failed: {first_line(exc)}"
                for bucket in decision.buckets:
                    bucket.kernel = DENSE
                sparse_rows = set()
        switch.choose([b.rows for b in decision.buckets], sparse_rows, keep_dense, release)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _factory_for(self, decision: LayerDecision, factory: SparseFactory) -> SparseFactory:
        """fp16 2:4 builds from the device weight; FP8/INT8 kernels from the codes and scales as stored."""
        if decision.alternative == SPARSE:
            return factory
        build, layer = self.quant_kernels[decision.alternative], self.quantized[decision.layer]
        return lambda _weight, bias: build(layer, bias)

    def _prepare(self, switch: SwitchLinear, rows: list[int]) -> None:
        """Per-bucket cuSPARSELt algorithm search (cached per process) for kernels that have one."""
        prepare = getattr(switch.sparse, "prepare", None)
        if prepare is None:
            return
        for count in rows:
            prepare(count, torch.randn(count, switch.in_features, device=self.device, dtype=self.dtype))
