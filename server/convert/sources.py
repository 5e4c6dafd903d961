"""Load what `twofour convert` is given: a torch.export program (.pt2) or a Hugging Face model directory.

Either way the converter gets one `Source`: an eager-callable fp32 module that pruning edits in place, its linear
layers as hookable `Target`s in execution order, the sequential blocks (transformer layers) when the model has them,
the tensor specs that become config.pbtxt's inputs/outputs, and `export()` which yields the program to save.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from server.convert import hf
from server.convert.hf_classify import Classifier
from server.convert.hf_classify import labels as classifier_labels
from server.convert.layers import Target, eager_linears, expose_graph_linears


@dataclass(frozen=True)
class TensorSpec:
    """One config tensor: dims exclude the batch dimension; -1 is a dynamic dim."""

    name: str
    dtype: torch.dtype
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class TextFiles:
    """A text model's tokenizer: files copied into the version directory, facts written as config parameters."""

    files: list[Path]
    parameters: dict[str, str]


@dataclass
class Source:
    kind: str  # "program" | "huggingface"
    label: str  # what the report names as the source
    model: nn.Module
    targets: list[Target]
    heads: set[str]  # layer names treated as output heads (skipped unless --only names them)
    blocks: list[nn.Module]  # sequential blocks; empty = the whole model is one block
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    export: Callable[[], torch.export.ExportedProgram]
    tokenizer: Any = None
    classifier: bool = False  # the first output holds class scores (top-1 agreement / accuracy make sense)
    extra: dict[str, Any] = field(default_factory=dict)
    text: TextFiles | None = None  # set when the source has a tokenizer.json: the model also takes `text`
    labels: list[str] | None = None  # class names of the first output, in index order (a labels file)


def load_source(path: Path, max_batch_size: int) -> Source:
    """Dispatch on what `path` is; anything else is a clear error."""
    if path.is_file() and path.suffix == ".pt2":
        return _program_source(path)
    if hf.is_hf_directory(path):
        return _hf_source(path, max_batch_size)
    raise ValueError(f"{path.name}: expected a torch.export program (.pt2) or a Hugging Face model directory "
                     "(with config.json and *.safetensors)")


def _spec_of(name: str, value: Any) -> TensorSpec:
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        raise ValueError(f"program input/output {name!r} is not a batched tensor")
    if isinstance(value.shape[0], int):
        raise ValueError(f"program {name!r} has a static batch dimension ({value.shape[0]}); export it with "
                         "dynamic_shapes={0: torch.export.Dim('batch')} so the server can batch requests")
    dims = tuple(d if isinstance(d, int) else -1 for d in value.shape[1:])
    return TensorSpec(name, value.dtype, dims)


def _program_source(path: Path) -> Source:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.load(str(path))
    placeholders = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    inputs = [_spec_of(name, placeholders[name]) for name in program.graph_signature.user_inputs]
    values = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
    user_values = [v.meta.get("val") for v in values[len(values) - len(program.graph_signature.user_outputs):]]
    out_spec = program.call_spec.out_spec
    if out_spec.type is dict:
        names = [str(k) for k in out_spec.context]
    elif len(user_values) == 1:
        names = ["output"]
    else:
        names = [f"output_{i}" for i in range(len(user_values))]
    outputs = [_spec_of(n, v) for n, v in zip(names, user_values, strict=True)]
    module = program.module()
    targets = expose_graph_linears(module)
    heads = {targets[-1].name} if targets else set()
    classifier = len(outputs[0].dims) == 1 and outputs[0].dtype.is_floating_point and outputs[0].dims[0] > 1
    return Source(kind="program", label=path.name, model=module, targets=targets, heads=heads, blocks=[],
                  inputs=inputs, outputs=outputs, export=lambda: program, classifier=classifier)


def _hf_source(path: Path, max_batch_size: int) -> Source:
    encoder, tokenizer = hf.load(path)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if encoder.uses_token_types else [])
    inputs = [TensorSpec(n, torch.int64, (-1,), optional=(n == "token_type_ids")) for n in names]
    config: Any = encoder.model.config  # an HF PretrainedConfig; nn.Module's __getattr__ types it as Tensor | Module
    hidden = int(config.hidden_size)
    labels: list[str] | None = None
    if isinstance(encoder, Classifier):
        labels = classifier_labels(config)
        outputs = [TensorSpec("logits", torch.float32, (len(labels),))]
    else:
        outputs = [TensorSpec("last_hidden_state", torch.float32, (-1, hidden))]
    if encoder.pooling is not None:
        width = hidden * len(encoder.pooling.modes)
        outputs.append(TensorSpec("sentence_embedding", torch.float32, (width,)))
    layer_blocks = hf.blocks(encoder)
    targets = eager_linears(encoder)
    inside = {id(m) for block in layer_blocks for m in block.modules()}
    heads = {t.name for t in targets if id(t.hook) not in inside}
    files = hf.tokenizer_files(path)
    text = None
    if any(f.name == "tokenizer.json" for f in files):
        text = TextFiles(files, hf.text_parameters(path, tokenizer, config, encoder.pooling, names))
    example = hf.tokenize(tokenizer, ["twofour export example", "a second, somewhat longer example sentence"],
                          encoder.uses_token_types)
    return Source(kind="huggingface", label=path.name, model=encoder, targets=targets, heads=heads,
                  blocks=layer_blocks, inputs=inputs, outputs=outputs,
                  export=lambda: hf.export(encoder, example, max_batch_size), tokenizer=tokenizer,
                  extra={"pooling": None if encoder.pooling is None else list(encoder.pooling.modes),
                         "normalize": bool(encoder.pooling and encoder.pooling.normalize)}, text=text,
                  classifier=labels is not None, labels=labels)


def forward(source: Source, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Call the source module the way the server will: inputs in config order (absent optional ones as zeros),
    outputs by config name."""
    twin = next(s.name for s in source.inputs if not s.optional)
    args = [inputs[s.name] if s.name in inputs else torch.zeros_like(inputs[twin], dtype=s.dtype)
            for s in source.inputs]
    result = source.model(*args)
    names = [s.name for s in source.outputs]
    if isinstance(result, dict):
        return {n: result[n] for n in names}
    if isinstance(result, torch.Tensor):
        result = (result,)
    return dict(zip(names, result, strict=False))
