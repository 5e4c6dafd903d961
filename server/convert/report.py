"""The conversion report: sparsity.json in the version directory, and the table printed at the end.

sparsity.json is written with sorted keys and rounded floats, and it holds nothing that depends on when or how fast
the conversion ran, so two runs on the same inputs produce byte-identical files. The one non-deterministic figure,
the wall time the conversion took, is therefore kept out of the repository: it is printed at the end of the report
("took N s") and returned as `ConvertResult.seconds`. (Reports written before this rule may still carry
`conversion.seconds`; print_report shows it when present.)
"""

from __future__ import annotations

import platform
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from server import __version__
from server.convert.calibration import Dataset
from server.convert.prune import PruneOutcome
from server.convert.selection import Decision

FORMAT = "twofour.sparsity/1"


def _bytes_of(shape: tuple[int, int], element: int, sparse: bool) -> int:
    rows, cols = shape
    return rows * cols // 2 * element + rows * cols // 8 if sparse else rows * cols * element


IN_DISTRIBUTION = ("agreement measured on the calibration data itself overstates what other text will see; "
                   "pass --evaluation with held-out text unlike the calibration")
SAME_SOURCE = ("when the evaluation data comes from the calibration's own source, agreement overstates what "
               "other inputs will see (bench/RESULTS.md: in- vs out-of-distribution)")


def layer_rows(decisions: list[Decision], outcome: PruneOutcome, method: str,
               stored: dict[str, int] | None = None,
               sensitivity: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per candidate layer; `stored`: bytes of each 2:4 layer as written (quantized layers differ from
    the formula), by weight name; `sensitivity`: agreement lost by pruning that layer alone."""
    rows = []
    for d in decisions:
        element = d.target.param.element_size()
        done = outcome.layers.get(d.target.weight_name)
        error = None if done is None or done.output_error is None else round(done.output_error, 6)
        rows.append({
            "name": d.target.name, "weight": d.target.weight_name, "shape": list(d.target.shape),
            "sparse": d.sparse, "reason": d.reason, "method": method if d.sparse else None,
            "fraction_zero": round(float((d.target.param == 0).float().mean()), 6),
            "relative_output_error": error,
            "calibration_rows": None if done is None else done.samples,
            "sensitivity": None if sensitivity is None or d.target.weight_name not in sensitivity
            else round(sensitivity[d.target.weight_name], 6),
            "dense_bytes": _bytes_of(d.target.shape, element, False),
            "stored_bytes": (stored or {}).get(d.target.weight_name, _bytes_of(d.target.shape, element, d.sparse)),
        })
    return rows


def build_report(*, source_label: str, source_kind: str, method: str, recover: dict[str, Any] | None,
                 calibration: Dataset, evaluation: dict[str, Any], evaluation_is_calibration: bool,
                 layers: list[dict[str, Any]], dense_bytes: int, stored_bytes: int,
                 distil_loss: dict[str, list[float]], extra: dict[str, Any], coverage: dict[str, Any] | None = None,
                 keep_dense: int = 0) -> dict[str, Any]:
    versions = {"torch": torch.__version__, "twofour": __version__, "python": platform.python_version()}
    if source_kind == "huggingface":
        import transformers

        versions["transformers"] = transformers.__version__
    return {
        "format": FORMAT,
        "source": {"name": source_label, "kind": source_kind, **extra},
        "method": method,
        "recover": recover,
        "calibration": {"data": calibration.label, "sha256": calibration.sha256, "samples": calibration.samples,
                        **({"coverage": coverage} if coverage is not None else {})},
        "evaluation": {**evaluation, "is_calibration_data": evaluation_is_calibration,
                       "note": IN_DISTRIBUTION if evaluation_is_calibration else SAME_SOURCE},
        "keep_dense": {"count": keep_dense,
                       "layers": [r["name"] for r in layers if r["reason"].endswith("(--keep-dense)")],
                       "extra_bytes": sum(r["dense_bytes"] - _bytes_of(tuple(r["shape"]), r["dense_bytes"] //
                                                                       (r["shape"][0] * r["shape"][1]), True)
                                          for r in layers if r["reason"].endswith("(--keep-dense)"))},
        "layers": layers,
        "totals": {"sparse_layers": sum(1 for r in layers if r["sparse"]),
                   "dense_layers": sum(1 for r in layers if not r["sparse"]),
                   "dense_bytes": dense_bytes, "stored_bytes": stored_bytes,
                   "ratio": round(stored_bytes / dense_bytes, 6) if dense_bytes else 1.0},
        "distillation_loss": {k: [round(v, 6) for v in losses] for k, losses in distil_loss.items()},
        "versions": versions,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def print_report(report: dict[str, Any], console: Console | None = None, seconds: float | None = None) -> None:
    """Per-layer table, then the model-level summary; `seconds`: the wall time the conversion took, if known."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 140)  # logs and pipes: keep one layer per line
    table = Table(title=f"{report['source']['name']}: {report['method']} 2:4", show_lines=False)
    numeric = ("zero", "rel. out err", "sensitivity", "dense", "stored")
    for column in ("layer", "shape", "2:4", *numeric, "note"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for row in report["layers"]:
        error, alone = row["relative_output_error"], row.get("sensitivity")
        table.add_row(row["name"], "x".join(map(str, row["shape"])), "yes" if row["sparse"] else "no",
                      f"{row['fraction_zero']:.3f}", "-" if error is None else f"{error:.4f}",
                      "-" if alone is None else f"{alone:.4f}",
                      _mib(row["dense_bytes"]), _mib(row["stored_bytes"]), row["reason"])
    console.print(table)
    console.print("sensitivity: 1 - mean cosine to dense with only that layer 2:4 (Wanda, no recovery)")
    _print_coverage(report, console)
    totals = report["totals"]
    evaluation = report["evaluation"]
    console.print(f"weights: {_mib(totals['dense_bytes'])} dense -> {_mib(totals['stored_bytes'])} stored "
                  f"({totals['ratio']:.2%}); {totals['sparse_layers']} layers 2:4, {totals['dense_layers']} dense")
    quantization = report.get("quantization")
    if quantization:
        console.print(f"2:4 values quantized to {quantization['storage_dtype']} with a float32 scale per row; "
                      "the figures below are for the dequantized model")
    kept = report.get("keep_dense", {})
    if kept.get("count"):
        console.print(f"--keep-dense {kept['count']}: {', '.join(kept['layers'])} stay dense, "
                      f"+{_mib(kept['extra_bytes'])} over 2:4")
    where = "calibration data" if evaluation.get("is_calibration_data") else evaluation["data"]
    for name, figures in evaluation["outputs"].items():
        console.print(f"{name} on {where} ({evaluation['samples']} samples): mean cosine {figures['mean_cosine']:.4f}, "
                      f"min {figures['min_cosine']:.4f}, max abs error {figures['max_abs_error']:.4g}")
    if evaluation.get("note"):
        console.print(f"[yellow]note:[/yellow] {evaluation['note']}")
    if "top1_agreement" in evaluation:
        console.print(f"top-1 agreement with dense: {evaluation['top1_agreement']:.2%}")
    if "accuracy" in evaluation:
        console.print(f"accuracy: dense {evaluation['dense_accuracy']:.2f}% -> 2:4 {evaluation['accuracy']:.2f}%")
    if seconds is None:
        seconds = report.get("conversion", {}).get("seconds")
    if seconds is not None:
        console.print(f"took {seconds:.1f} s")


def _print_coverage(report: dict[str, Any], console: Console) -> None:
    cover = report["calibration"].get("coverage")
    if not cover:
        return
    line = f"calibration {report['calibration']['data']}: {cover['samples']} samples"
    if "tokens" in cover:
        line += (f", {cover['tokens']} tokens ({cover['distinct_tokens']} distinct"
                 + (f", {cover['vocabulary_coverage']:.1%} of the vocabulary" if "vocabulary_coverage" in cover else "")
                 + f"), length {cover['length_min']}..{cover['length_max']} (median {cover['length_median']})")
    if "evaluation_tokens_seen" in cover:
        line += f"; {cover['evaluation_tokens_seen']:.1%} of evaluation tokens seen in calibration"
    console.print(line)
    for warning in cover["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
