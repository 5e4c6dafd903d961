"""A Hugging Face `*ForSequenceClassification` directory as a servable classifier: token inputs -> `logits`.

The head (pooler + classifier) is kept as the checkpoint has it; the converter treats its linears as output heads
(dense unless --only names them). The labels come from config.json's `id2label`, one per line in index order,
written to the model directory as Triton's `label_filename` so the classification extension can name classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

LABELS_FILE = "labels.txt"


def is_classifier_directory(directory: Path) -> bool:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


class Classifier(nn.Module):
    """The exported model: the HF classifier with its logits as the named output."""

    def __init__(self, model: nn.Module, uses_token_types: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = None  # no sentence embedding (the Encoder's attribute, read by the converter)
        self.uses_token_types = uses_token_types

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        extra = {"token_type_ids": token_type_ids} if self.uses_token_types else {}
        return {"logits": self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits}


def load_classifier(directory: Path, kwargs: dict[str, Any]) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(directory), **kwargs)


def labels(model_config: Any) -> list[str]:
    """id2label in index order; every label on one line (a newline inside a label would shift the rest)."""
    id2label = {int(k): str(v) for k, v in (getattr(model_config, "id2label", None) or {}).items()}
    count = int(getattr(model_config, "num_labels", len(id2label)))
    names = [id2label.get(i, f"LABEL_{i}") for i in range(count)]
    bad = [n for n in names if "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"id2label holds labels with line breaks, which a labels file cannot keep: {bad}")
    return names
