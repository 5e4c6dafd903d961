"""Calibration and evaluation data: .npz / .safetensors arrays named like the model inputs, or a text file.

A text file (one UTF-8 sample per line, blank lines ignored) is tokenized with the source's tokenizer, at most
128 tokens per sample; the first N lines are used, batched by length. Each batch carries a token mask so padding
never enters the layer statistics. An array file may also hold `labels` (integer class per sample): evaluation then
reports accuracy.
Samples are taken in file order (the first N), so a conversion is reproducible from its files alone. Several files
(`--calibration a.txt b.txt`) are one dataset: text lines or array rows concatenated in the order given, all files of
one kind; the label joins the names and the sha256 covers every file's bytes in order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from server.convert import hf
from server.convert.sources import Source

BATCH = 16
LABEL_KEYS = ("labels", "label")


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # by config input name
    token_mask: torch.Tensor | None = None  # bool [batch, seq]: real tokens (text data only)
    labels: torch.Tensor | None = None


@dataclass
class Dataset:
    label: str  # file name, for the report
    sha256: str
    samples: int
    batches: list[Batch]

    @property
    def has_labels(self) -> bool:
        return bool(self.batches) and all(b.labels is not None for b in self.batches)


def load_dataset(paths: Path | list[Path], source: Source, limit: int | None = None) -> Dataset:
    """Read one file or several (concatenated in order) into batches for `source`; a clear ValueError for anything
    that does not fit."""
    files = [paths] if isinstance(paths, Path) else list(paths)
    if not files:
        raise ValueError("no data file given")
    for path in files:
        if not path.is_file():
            raise ValueError(f"data file {path.name!r} does not exist")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    kinds = {"arrays" if p.suffix.lower() in (".npz", ".safetensors") else "text" for p in files}
    label = "+".join(p.name for p in files)
    if len(kinds) > 1:
        raise ValueError(f"{label}: mixes array files and text files; give files of one kind")
    if kinds == {"arrays"}:
        batches, count = _array_batches(_concatenated([_read_arrays(p) for p in files], label), source, limit)
    elif source.tokenizer is not None:
        batches, count = _text_batches(files, source, limit)
    else:
        raise ValueError(f"{label}: use .npz or .safetensors arrays named {[s.name for s in source.inputs]} "
                         "(text files need a Hugging Face source with a tokenizer)")
    if count == 0:
        raise ValueError(f"{label}: holds no samples")
    return Dataset(label, digest.hexdigest(), count, batches)


def _concatenated(parts: list[dict[str, np.ndarray]], label: str) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    keys = set(parts[0])
    if any(set(p) != keys for p in parts):
        raise ValueError(f"{label}: the files hold different arrays ({[sorted(p) for p in parts]})")
    try:
        return {k: np.concatenate([p[k] for p in parts]) for k in sorted(keys)}
    except ValueError as exc:
        raise ValueError(f"{label}: arrays do not concatenate ({exc})") from None


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        from safetensors.numpy import load_file

        return load_file(str(path))
    except Exception as exc:  # corrupt or pickled files: say so instead of crashing
        raise ValueError(f"{path.name}: cannot read arrays ({type(exc).__name__}: {exc})") from None


def _array_batches(arrays: dict[str, np.ndarray], source: Source, limit: int | None) -> tuple[list[Batch], int]:
    names = [s.name for s in source.inputs]
    missing = [s.name for s in source.inputs if s.name not in arrays and not s.optional]
    if missing:
        raise ValueError(f"data file lacks arrays {missing}; it has {sorted(arrays)} and the model takes {names}")
    present = [s for s in source.inputs if s.name in arrays]
    count = int(arrays[present[0].name].shape[0])
    tensors: dict[str, torch.Tensor] = {}
    for spec in present:
        array = arrays[spec.name]
        if array.shape[0] != count:
            raise ValueError(f"array {spec.name!r} has {array.shape[0]} samples, {present[0].name!r} has {count}")
        dims = array.shape[1:]
        if len(dims) != len(spec.dims) or any(w not in (-1, d) for w, d in zip(spec.dims, dims, strict=True)):
            raise ValueError(f"array {spec.name!r} has sample shape {list(dims)}; the model takes {list(spec.dims)}")
        tensors[spec.name] = torch.from_numpy(np.ascontiguousarray(array)).to(spec.dtype)
    labels = next((arrays[k] for k in LABEL_KEYS if k in arrays), None)
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != count):
        raise ValueError(f"labels must be a 1-D array with one class per sample ({count}), got {list(labels.shape)}")
    if limit:
        count = min(count, limit)
    batches = []
    for start in range(0, count, BATCH):
        end = min(start + BATCH, count)
        batches.append(Batch({k: v[start:end] for k, v in tensors.items()},
                             labels=None if labels is None else torch.from_numpy(labels[start:end].astype(np.int64))))
    return batches, count


def _text_batches(paths: list[Path], source: Source, limit: int | None) -> tuple[list[Batch], int]:
    lines = []
    for path in paths:
        try:
            lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path.name}: not UTF-8 text ({exc})") from None
    lines = [line for line in lines if line]
    if limit:
        lines = lines[:limit]
    # Batch similar lengths together (stable, so still deterministic): far less padding to compute through.
    lines = sorted(lines, key=len)
    uses_token_types = any(s.name == "token_type_ids" for s in source.inputs)
    batches = []
    for start in range(0, len(lines), BATCH):
        inputs = hf.tokenize(source.tokenizer, lines[start:start + BATCH], uses_token_types)
        batches.append(Batch(inputs, token_mask=inputs["attention_mask"].bool()))
    return batches, len(lines)
