"""A Hugging Face encoder directory as a servable module: inputs by name in, named tensors out.

The served model takes `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer produces it) and
returns `last_hidden_state`; a sentence-transformers directory (modules.json with a Pooling module) also returns
`sentence_embedding`, pooled and normalized exactly as its modules.json / 1_Pooling/config.json say, so the served
embedding equals `SentenceTransformer.encode`. Everything is loaded offline (`local_files_only`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from server.convert.hf_classify import Classifier, is_classifier_directory, load_classifier

MAX_LENGTH = 128  # tokens per calibration/evaluation sample (the rule)
# What the server needs to tokenize text as the source model does; never a pickle (sentencepiece .model files
# and tokenizer pickles are not copied: the server loads tokenizer.json with HF `tokenizers` only).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")


@dataclass(frozen=True)
class Pooling:
    """sentence-transformers pooling: which modes are concatenated, and whether a Normalize module follows."""

    modes: tuple[str, ...]
    normalize: bool


def read_pooling(directory: Path) -> Pooling | None:
    """The Pooling (+ Normalize) of a sentence-transformers directory, or None for a plain HF model."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    pooling = next((m for m in modules if m.get("type", "").endswith("models.Pooling")), None)
    if pooling is None:
        return None
    config = json.loads((directory / pooling.get("path", "") / "config.json").read_text(encoding="utf-8"))
    modes = tuple(m for m in _POOLING_MODES if config.get(f"pooling_mode_{m}"))
    unsupported = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k[13:] not in modes]
    if unsupported or not modes:
        raise ValueError(f"sentence-transformers pooling {unsupported or 'with no mode'} is not supported")
    normalize = any(m.get("type", "").endswith("models.Normalize") for m in modules)
    return Pooling(modes, normalize)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """sentence_transformers.models.Pooling.forward (+ Normalize), for the modes it supports."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    parts: list[torch.Tensor] = []
    for mode in pooling.modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(torch.where(mask > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values)
        else:
            summed = (hidden * mask).sum(dim=1)
            count = mask.sum(dim=1).clamp(min=1e-9)
            parts.append(summed / (count if mode == "mean_tokens" else count.sqrt()))
    embedding = torch.cat(parts, dim=1)
    return F.normalize(embedding, p=2, dim=1) if pooling.normalize else embedding


class Encoder(nn.Module):
    """The exported model: an HF encoder (+ sentence-transformers pooling) with named tensor outputs."""

    def __init__(self, model: nn.Module, pooling: Pooling | None, uses_token_types: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.uses_token_types = uses_token_types

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        extra = {"token_type_ids": token_type_ids} if self.uses_token_types else {}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        out = {"last_hidden_state": hidden}
        if self.pooling is not None:
            out["sentence_embedding"] = pool(hidden, attention_mask, self.pooling)
        return out


def is_hf_directory(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load(directory: Path) -> tuple[Encoder | Classifier, Any]:
    """(wrapper module in fp32 eval mode, tokenizer) from a local HF / sentence-transformers directory; a
    `*ForSequenceClassification` directory gives a Classifier (logits) instead of an Encoder."""
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:  # pragma: no cover - the 'convert' extra is missing
        raise ValueError("converting a Hugging Face directory needs `transformers` "
                         "(pip install twofour[convert])") from exc
    if not any(directory.glob("*.safetensors")):
        raise ValueError(f"{directory.name}: no *.safetensors weights (pickled .bin checkpoints are not loaded)")
    hf_logging.set_verbosity_error()  # the dropped pooler is expected, not news
    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "dtype": torch.float32,
                              "attn_implementation": "sdpa"}
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    uses_token_types = "token_type_ids" in tokenizer.model_input_names
    if is_classifier_directory(directory):
        return Classifier(load_classifier(directory, kwargs).eval(), uses_token_types).eval(), tokenizer
    try:
        model = AutoModel.from_pretrained(str(directory), add_pooling_layer=False, **kwargs)
    except TypeError:  # architectures without a pooler take no such argument
        model = AutoModel.from_pretrained(str(directory), **kwargs)
    return Encoder(model.eval(), read_pooling(directory), uses_token_types).eval(), tokenizer


def tokenize(tokenizer: Any, lines: list[str], uses_token_types: bool) -> dict[str, torch.Tensor]:
    """Tokenize one batch (padded to its longest line, at most MAX_LENGTH tokens) as INT64 tensors."""
    encoded = tokenizer(lines, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_token_types else [])
    return {n: encoded[n].to(torch.int64) for n in names}


def max_sequence_length(directory: Path, tokenizer: Any, model_config: Any) -> int:
    """The longest input the model takes, as sentence-transformers truncates it: sentence_bert_config.json's
    max_seq_length, else the tokenizer's model_max_length; never above the position embeddings."""
    limit = int(getattr(model_config, "max_position_embeddings", 512))
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return min(value, limit)
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000:  # transformers' "no limit" is a huge sentinel
        return min(value, limit)
    return limit


def text_parameters(directory: Path, tokenizer: Any, model_config: Any, pooling: Pooling | None,
                    token_inputs: list[str]) -> dict[str, str]:
    """config.pbtxt parameters that tell the server how to turn `text` into the token inputs."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    facts = {
        "text_max_length": str(max_sequence_length(directory, tokenizer, model_config)),
        "text_pad_id": str(int(pad_id)),
        "text_pad_token": str(tokenizer.pad_token or ""),
        "text_token_inputs": ",".join(token_inputs),
        "text_required_inputs": ",".join(n for n in token_inputs if n != "token_type_ids"),
    }
    if pooling is not None:
        facts["embedding_output"] = "sentence_embedding"
        facts["embedding_normalized"] = "true" if pooling.normalize else "false"
    return facts


def tokenizer_files(directory: Path) -> list[Path]:
    """The tokenizer files to store beside the program; tokenizer.json is required for text input."""
    return [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]


def blocks(encoder: nn.Module) -> list[nn.Module]:
    """The transformer layers in order: the longest nn.ModuleList whose children hold linear layers."""
    best: list[nn.Module] = []
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best):
            if all(any(isinstance(m, nn.Linear) for m in child.modules()) for child in module):
                best = list(module)
    return best


def export(encoder: Encoder | Classifier, example: dict[str, torch.Tensor],
           max_batch: int) -> torch.export.ExportedProgram:
    """torch.export with dynamic batch and sequence dims (strict=False: HF code is not dynamo-strict clean)."""
    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    seq = torch.export.Dim("sequence", min=1, max=int(getattr(encoder.model.config, "max_position_embeddings", 512)))
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if encoder.uses_token_types else [])
    args = tuple(example[n] for n in names)
    with torch.no_grad():
        return torch.export.export(encoder, args, dynamic_shapes=tuple({0: batch, 1: seq} for _ in names), strict=False)
