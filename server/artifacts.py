"""Read and write a version directory's artefacts: `program.pt2` (architecture) and `weights.safetensors`.

The program is saved with its weights replaced by zero-stride placeholders, so the architecture costs kilobytes
and every parameter lives once, in safetensors, where 2:4 layers are stored compressed (`.values` + `.mask`).
Loading never unpickles: safetensors for tensors, `torch.export.load` for the program.
Quantized 2:4 layers (`--quantize fp8|int8`) add `.scale`; loading validates the trio and dequantizes them to the
dense float32 weight the format means, keeping the stored tensors in `Weights.quantized` for kernels that use them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from server.sparsity import compress, decompress
from server.sparsity.quantize import NONE, QuantizedLayer, check_scheme, dequantize_rows, quantize, validate_stored

VALUES_SUFFIX = ".values"
MASK_SUFFIX = ".mask"
SCALE_SUFFIX = ".scale"


@dataclass
class Weights:
    """Decompressed parameters by state-dict name, plus what the storage format said about them."""

    tensors: dict[str, torch.Tensor]
    sparse: set[str] = field(default_factory=set)  # names stored as 2:4 (values + mask)
    stored_bytes: int = 0  # bytes of the tensors as stored in the file
    quantized: dict[str, QuantizedLayer] = field(default_factory=dict)  # 2:4 names stored fp8/int8, as stored
    layer_stored_bytes: dict[str, int] = field(default_factory=dict)  # per 2:4 name: values + mask (+ scale)

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


def save_weights(tensors: dict[str, torch.Tensor], sparse: set[str], path: Path, quantization: str = NONE) -> None:
    """Write parameters; names in `sparse` are stored as 2:4 `.values` + `.mask` (and, with `quantization`
    fp8/int8, the values quantized per row plus a float32 `.scale`), the rest as they are."""
    check_scheme(quantization)
    out: dict[str, torch.Tensor] = {}
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if name in sparse:
            values, mask = compress(tensor)
            if quantization != NONE:
                values, scale = quantize(values, quantization)
                out[name + SCALE_SUFFIX] = scale.contiguous()
            out[name + VALUES_SUFFIX] = values.contiguous()
            out[name + MASK_SUFFIX] = mask
        else:
            out[name] = tensor
    save_file(out, str(path))


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def load_weights(path: Path) -> Weights:
    """Read parameters, decompressing each `.values`/`.mask` pair exactly into its dense weight; a quantized pair
    (fp8/int8 values + `.scale`) becomes the float32 weight stored x scale[row]."""
    raw = load_file(str(path))
    weights = Weights(tensors={}, stored_bytes=sum(_nbytes(t) for t in raw.values()))
    for name, tensor in raw.items():
        if name.endswith((MASK_SUFFIX, SCALE_SUFFIX)):
            continue
        if not name.endswith(VALUES_SUFFIX):
            weights.tensors[name] = tensor
            continue
        base = name[: -len(VALUES_SUFFIX)]
        mask = raw.get(base + MASK_SUFFIX)
        if mask is None:
            raise ValueError(f"weights: {name!r} has no matching {base + MASK_SUFFIX!r}")
        scale = raw.get(base + SCALE_SUFFIX)
        scheme = validate_stored(base, tensor, scale)
        try:
            values = tensor if scheme == NONE else dequantize_rows(tensor, scale)  # type: ignore[arg-type]
            weights.tensors[base] = decompress(values, mask)
        except ValueError as exc:  # name the layer: a shape or mask mismatch is about this trio of tensors
            raise ValueError(f"weights: {base}: {exc}") from None
        if scale is not None:
            weights.quantized[base] = QuantizedLayer(scheme, tensor, mask, scale)
        weights.sparse.add(base)
        weights.layer_stored_bytes[base] = _nbytes(tensor) + _nbytes(mask) + (0 if scale is None else _nbytes(scale))
    for suffix in (MASK_SUFFIX, SCALE_SUFFIX):
        orphans = [n for n in raw if n.endswith(suffix) and n[: -len(suffix)] not in weights.sparse]
        if orphans:
            raise ValueError(f"weights: {suffix.lstrip('.')} tensors without values: {orphans}")
    return weights


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
