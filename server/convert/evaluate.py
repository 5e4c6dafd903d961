"""Model-level agreement between the dense source and the written (reloaded) 2:4 model on evaluation data.

Figures are computed on the files as written, loaded back through the server's own path (artifacts.build_module +
runtime.binding), so the report describes what will be served, not an in-memory twin. Per float output: mean,
5th-percentile and minimum cosine between dense and sparse outputs (per sample; per real token for [batch, seq, ...]
outputs of text data) and the max abs error. Classifiers also get top-1 agreement; labelled data gets both accuracies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import build_module, load_program, load_weights
from server.convert.calibration import Dataset
from server.convert.sources import Source, forward
from server.repository import PROGRAM_FILE, WEIGHTS_FILE
from server.runtime.binding import call, make_binding


def dense_outputs(source: Source, data: Dataset) -> list[dict[str, torch.Tensor]]:
    """The source's outputs on every evaluation batch, taken before pruning touches the weights."""
    with torch.no_grad():
        return [{k: v.detach().clone() for k, v in forward(source, b.inputs).items()} for b in data.batches]


def written_outputs(version_dir: Path, config: mc.ModelConfig, data: Dataset) -> list[dict[str, torch.Tensor]]:
    """Outputs of the model as stored in `version_dir`, run the way CpuRuntime runs it."""
    program = load_program(version_dir / PROGRAM_FILE)
    module = build_module(program, load_weights(version_dir / WEIGHTS_FILE))
    binding = make_binding(program, config)
    with torch.inference_mode():
        return [call(module, binding, dict(b.inputs)) for b in data.batches]


def _rows(tensor: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    if token_mask is not None and tensor.dim() >= 3 and tuple(tensor.shape[:2]) == tuple(token_mask.shape):
        return tensor[token_mask].reshape(int(token_mask.sum()), -1)
    return tensor.reshape(tensor.shape[0], -1)


def compare(source: Source, data: Dataset, dense: list[dict[str, torch.Tensor]],
            sparse: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The report's `evaluation` section."""
    result: dict[str, Any] = {"data": data.label, "samples": data.samples, "outputs": {}}
    for spec in source.outputs:
        if not spec.dtype.is_floating_point:
            continue
        d = torch.cat([_rows(o[spec.name].double(), b.token_mask) for o, b in zip(dense, data.batches, strict=True)])
        s = torch.cat([_rows(o[spec.name].double(), b.token_mask) for o, b in zip(sparse, data.batches, strict=True)])
        cosine = torch.nn.functional.cosine_similarity(d, s, dim=1, eps=1e-12)
        result["outputs"][spec.name] = {"mean_cosine": round(float(cosine.mean()), 6),
                                        "p5_cosine": round(float(torch.quantile(cosine, 0.05)), 6),
                                        "min_cosine": round(float(cosine.min()), 6),
                                        "max_abs_error": float((d - s).abs().max())}
    if source.classifier:
        first = source.outputs[0].name
        dense_top = torch.cat([o[first].argmax(dim=1) for o in dense])
        sparse_top = torch.cat([o[first].argmax(dim=1) for o in sparse])
        result["top1_agreement"] = round(float((dense_top == sparse_top).double().mean()), 6)
        if data.has_labels:
            labels = torch.cat([b.labels for b in data.batches if b.labels is not None])
            result["dense_accuracy"] = round(100.0 * float((dense_top == labels).double().mean()), 4)
            result["accuracy"] = round(100.0 * float((sparse_top == labels).double().mean()), 4)
    result["drop"] = accuracy_drop(result, source)
    return result


def accuracy_drop(evaluation: dict[str, Any], source: Source) -> float:
    """What --max-accuracy-drop limits, in points: accuracy lost when labels were given, else 100 x (1 - mean
    cosine) of the model's main output (the sentence embedding when there is one, else the first output)."""
    if "accuracy" in evaluation:
        return round(evaluation["dense_accuracy"] - evaluation["accuracy"], 4)
    outputs = evaluation["outputs"]
    main = "sentence_embedding" if "sentence_embedding" in outputs else next(iter(outputs), None)
    if main is None:
        return 0.0
    return round(100.0 * (1.0 - outputs[main]["mean_cosine"]), 4)
