"""`twofour convert` end to end: load -> select -> calibrate + prune (+ recover) -> write -> evaluate -> commit.

The repository is touched only by the final rename, so a failure anywhere (bad data, a rejected accuracy drop)
leaves it as it was. Deterministic: fixed seeds, data in file order, sorted tensors, fixed archive names and no
wall time in sparsity.json, so the same inputs give byte-identical repository files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from server.artifacts import load_weights
from server.convert import cpu_agreement, evaluate
from server.convert.augment import augmented
from server.convert.calibration import load_dataset
from server.convert.coverage import coverage
from server.convert.methods import METHODS
from server.convert.prune import Pruner
from server.convert.recover import RecoverOptions
from server.convert.report import build_report, layer_rows
from server.convert.selection import select
from server.convert.sensitivity import keep_dense, sensitivity
from server.convert.sources import load_source
from server.convert.writer import Staging, build_config
from server.repository import WEIGHTS_FILE
from server.sparsity.quantize import check_scheme, quantization_report


class ConversionRejected(ValueError):
    """--max-accuracy-drop was exceeded; nothing was written."""


@dataclass
class ConvertOptions:
    source: Path
    name: str
    output_repository: Path
    calibration: Path | list[Path]
    method: str = "sparsegpt"
    version: int | None = None
    calibration_samples: int | None = 128
    evaluation: Path | None = None
    skip: list[str] = field(default_factory=list)
    only: list[str] = field(default_factory=list)
    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_accuracy_drop: float | None = None
    recover: RecoverOptions | None = None
    show_progress: bool = True
    quantize: str = "none"  # fp8 | int8: the 2:4 layers' kept values stored quantized per row (sparsity/quantize.py)
    keep_dense: int = 0  # leave the K most sensitive eligible layers dense


@dataclass
class ConvertResult:
    version_dir: Path
    report: dict
    seconds: float  # wall time; printed, never written into the repository (it would break byte-identical files)


def convert(options: ConvertOptions) -> ConvertResult:
    if options.method not in METHODS:
        raise ValueError(f"unknown method {options.method!r}; choose one of {sorted(METHODS)}")
    check_scheme(options.quantize)
    if options.max_batch_size < 1:
        raise ValueError("--max-batch-size must be at least 1")
    torch.manual_seed(0)
    started = time.perf_counter()
    source = load_source(options.source, options.max_batch_size)
    calibration = load_dataset(options.calibration, source, options.calibration_samples)
    held_out = load_dataset(options.evaluation, source) if options.evaluation else calibration
    decisions = select(source.targets, source.heads, options.only, options.skip)
    if options.keep_dense < 0:
        raise ValueError(f"--keep-dense must be 0 or more, got {options.keep_dense}")
    cover = coverage(calibration, len(source.tokenizer) if source.tokenizer is not None else None,
                     held_out if options.evaluation else None)
    if not any(d.sparse for d in decisions):
        reasons = "; ".join(f"{d.target.name}: {d.reason}" for d in decisions) or "the model has no linear layers"
        raise ValueError(f"no layer can be made 2:4 sparse ({reasons})")
    reference = evaluate.dense_outputs(source, held_out)
    for p in source.model.parameters():
        p.requires_grad_(False)
    sensitive = sensitivity(source, decisions, calibration.batches, options.show_progress)
    decisions = keep_dense(decisions, sensitive, options.keep_dense)
    batches = list(calibration.batches)
    if options.recover is not None and options.recover.augment and source.tokenizer is not None:
        batches += augmented(calibration.batches, options.recover.augment, options.recover.replace_fraction,
                             len(source.tokenizer), list(source.tokenizer.all_special_ids))
    outcome = Pruner(source, decisions, options.method, options.recover, options.show_progress).run(batches)

    program = source.export()
    # The program's parameter names, with the values of the pruned module (a loaded .pt2 program still holds
    # the dense originals; an HF export holds the pruned tensors, and both share names with source.model).
    pruned_state = source.model.state_dict()
    weights = {k: pruned_state.get(k, v).detach().clone() for k, v in program.module().state_dict().items()}
    sparse = {d.target.weight_name for d in decisions if d.sparse}
    missing = sorted(sparse - weights.keys())
    if missing:
        raise RuntimeError(f"pruned weights {missing} are not in the exported program's state dict")
    config = build_config(options.name, source, options.max_batch_size, options.dynamic_batching)
    staging = Staging(options.output_repository, options.name, options.version)
    try:
        staging.write_model(config, program, weights, sparse, options.quantize,
                            source.text.files if source.text else [], source.labels)
        scores = evaluate.compare(source, held_out, reference, evaluate.written_outputs(staging.dir, config, held_out))
        stored = load_weights(staging.dir / WEIGHTS_FILE)  # the bytes as written, not an estimate
        dense_bytes, stored_bytes = stored.dense_bytes(), stored.stored_bytes
        report = build_report(
            source_label=source.label, source_kind=source.kind, method=options.method,
            recover=None if options.recover is None else vars(options.recover).copy(),
            calibration=calibration, evaluation=scores, evaluation_is_calibration=options.evaluation is None,
            layers=layer_rows(decisions, outcome, options.method, stored.layer_stored_bytes, sensitive),
            dense_bytes=dense_bytes, stored_bytes=stored_bytes, distil_loss=outcome.distil_loss,
            extra=source.extra, coverage=cover, keep_dense=options.keep_dense)
        # the accuracy guard below measured the dequantized model (evaluate.written_outputs reads the file)
        report["quantization"] = quantization_report(options.quantize, weights, stored.quantized)
        report[cpu_agreement.REPORT_KEY] = cpu_agreement.scores(  # what each CPU precision would serve
            source, held_out, reference, staging.dir, config, scores, options.max_accuracy_drop)
        if options.max_accuracy_drop is not None and scores["drop"] > options.max_accuracy_drop:
            raise ConversionRejected(
                f"conversion rejected: the evaluation drop is {scores['drop']:.4f} points, more than "
                f"--max-accuracy-drop {options.max_accuracy_drop}; nothing was written")
        staging.write_report(report)
        return ConvertResult(staging.commit(), report, time.perf_counter() - started)
    finally:
        staging.discard()
