"""Read and write a version directory's artefacts: `program.pt2` (architecture) and `weights.safetensors`.

The program is saved with its weights replaced by zero-stride placeholders, so the architecture costs kilobytes
and every parameter lives once, in safetensors, where 2:4 layers are stored compressed (`.values` + `.mask`).
Loading never unpickles: safetensors for tensors, `torch.export.load` for the program.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from server.sparsity import compress, decompress

VALUES_SUFFIX = ".values"
MASK_SUFFIX = ".mask"


@dataclass
class Weights:
    """Decompressed parameters by state-dict name, plus what the storage format said about them."""

    tensors: dict[str, torch.Tensor]
    sparse: set[str] = field(default_factory=set)  # names stored as 2:4 (values + mask)
    stored_bytes: int = 0  # bytes of the tensors as stored in the file

    def dense_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def save_program(program: torch.export.ExportedProgram, path: Path) -> None:
    """Save the architecture only: every state-dict tensor becomes a zero-stride placeholder of the same shape."""
    originals = dict(program.state_dict)
    try:
        for name, tensor in originals.items():
            placeholder = torch.zeros((), dtype=tensor.dtype).expand(tensor.shape)
            program.state_dict[name] = (
                torch.nn.Parameter(placeholder, requires_grad=False)
                if isinstance(tensor, torch.nn.Parameter)
                else placeholder
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.save(program, str(path))
    finally:
        program.state_dict.update(originals)


def load_program(path: Path) -> torch.export.ExportedProgram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.load(str(path))


def save_weights(tensors: dict[str, torch.Tensor], sparse: set[str], path: Path) -> None:
    """Write parameters; names in `sparse` are stored as 2:4 `.values` + `.mask`, the rest as they are."""
    out: dict[str, torch.Tensor] = {}
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if name in sparse:
            values, mask = compress(tensor)
            out[name + VALUES_SUFFIX] = values
            out[name + MASK_SUFFIX] = mask
        else:
            out[name] = tensor
    save_file(out, str(path))


def load_weights(path: Path) -> Weights:
    """Read parameters, decompressing each `.values`/`.mask` pair exactly into its dense weight."""
    raw = load_file(str(path))
    tensors: dict[str, torch.Tensor] = {}
    sparse: set[str] = set()
    stored = 0
    for name, tensor in raw.items():
        stored += tensor.numel() * tensor.element_size()
        if name.endswith(MASK_SUFFIX):
            continue
        if name.endswith(VALUES_SUFFIX):
            base = name[: -len(VALUES_SUFFIX)]
            mask = raw.get(base + MASK_SUFFIX)
            if mask is None:
                raise ValueError(f"weights: {name!r} has no matching {base + MASK_SUFFIX!r}")
            tensors[base] = decompress(tensor, mask)
            sparse.add(base)
        else:
            tensors[name] = tensor
    orphans = [n for n in raw if n.endswith(MASK_SUFFIX) and n[: -len(MASK_SUFFIX)] not in sparse]
    if orphans:
        raise ValueError(f"weights: masks without values: {orphans}")
    return Weights(tensors=tensors, sparse=sparse, stored_bytes=stored)


def build_module(program: torch.export.ExportedProgram, weights: Weights) -> torch.nn.Module:
    """The runnable module: the program's graph with the real weights assigned (shapes checked by torch)."""
    module = program.module()
    expected = set(module.state_dict().keys())
    missing = sorted(expected - weights.tensors.keys())
    if missing:
        raise ValueError(f"weights: program parameters missing from weights.safetensors: {missing[:5]}")
    extra = sorted(weights.tensors.keys() - expected)
    if extra:
        raise ValueError(f"weights: tensors the program does not use: {extra[:5]}")
    module.load_state_dict(weights.tensors, strict=True, assign=True)
    return module
