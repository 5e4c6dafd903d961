"""Each CPU precision's agreement with the dense source, measured at conversion on the evaluation data.

Why: the server may serve a model in bf16 or int8 (server/runtime/cpu_precision.py), so the figure a conversion is
judged by must be that of the precision served, not only fp32's. The written model is loaded back, its linear layers
converted exactly as the runtime converts them, and scored with the same `evaluate.compare` as the fp32 figures.
`--max-accuracy-drop` then applies to every precision: one whose drop exceeds it is written `"allowed": false`
in sparsity.json, and the runtime never serves it (auto skips it; forcing it is a load error). fp32 over the limit
still rejects the conversion (pipeline.py), as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import build_module, load_program, load_weights
from server.convert import evaluate
from server.convert.calibration import Dataset
from server.convert.sources import Source
from server.repository import PROGRAM_FILE, WEIGHTS_FILE
from server.runtime.binding import call, make_binding
from server.runtime.cpu_precision import REPORT_KEY, convert, int8_available

__all__ = ["REPORT_KEY", "precision_outputs", "scores"]

LOWER_PRECISIONS = ("bf16", "int8")


def precision_outputs(version_dir: Path, config: mc.ModelConfig, data: Dataset,
                      precision: str) -> list[dict[str, torch.Tensor]]:
    """The written model's outputs with its linear layers at `precision`, run the way CpuRuntime runs it."""
    program = load_program(version_dir / PROGRAM_FILE)
    module = build_module(program, load_weights(version_dir / WEIGHTS_FILE))
    convert(module, precision)
    binding = make_binding(program, config)
    with torch.inference_mode():
        return [call(module, binding, dict(b.inputs)) for b in data.batches]


def scores(source: Source, data: Dataset, reference: list[dict[str, torch.Tensor]], version_dir: Path,
           config: mc.ModelConfig, fp32: dict[str, Any], max_drop: float | None) -> dict[str, Any]:
    """sparsity.json's `cpu_precisions` section: per precision its drop, per-output figures and whether served."""
    section: dict[str, Any] = {"fp32": {"drop": fp32["drop"], "allowed": True}}
    for precision in LOWER_PRECISIONS:
        if precision == "int8" and not int8_available():
            continue
        result = evaluate.compare(source, data, reference, precision_outputs(version_dir, config, data, precision))
        allowed = max_drop is None or result["drop"] <= max_drop
        section[precision] = {"drop": result["drop"], "outputs": result["outputs"], "allowed": allowed,
                              **({"top1_agreement": result["top1_agreement"]} if "top1_agreement" in result else {}),
                              **({"accuracy": result["accuracy"]} if "accuracy" in result else {})}
    return section
