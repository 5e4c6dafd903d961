"""CPU precisions for the dense path: the exported graph rewritten to run in bf16 (all of it) or int8 (its linears).

- bf16: the whole graph in bfloat16. Floating parameters, buffers and constants are stored in bf16, floating inputs
  are cast on entry, every op that names float32 (a mask cast, a `full`) names bfloat16 instead, and floating outputs
  are cast back to float32, so the model's boundary dtypes are untouched and integer inputs (token ids, masks) never
  meet a cast. Why the whole graph and not only the linears: on the exported MiniLM (32 x 128 tokens, 2 threads,
  avx512_bf16 without AMX) linear-only bf16 ran 1.40x fp32 and the whole graph 1.87x: the casts in and out of every
  linear and the fp32 layer norms, GELUs, softmaxes and residual adds (memory-bound, twice the bytes) ate most of
  the GEMM's gain. The fragile reductions stay accurate anyway: torch's CPU layer norm, softmax and sums accumulate
  bf16 in fp32. Agreement is measured against fp32 at load like every candidate (cpu_choice.py); MiniLM's sentence
  embeddings kept cosine 0.99996 mean / 0.99995 min. GEMMs run on oneDNN's avx512_bf16 / AMX kernels where the CPU
  has them; where it has neither, bf16 is emulated and slower, which auto's timing sees.
- int8: only the linear layers, per-output-channel symmetric int8 weights, activations quantised dynamically at each
  call (fbgemm's `quantized::linear_dynamic`: one scale per call over the whole activation tensor, 7-bit range on
  x86 so the u8 x s8 multiply-adds cannot saturate); the rest of the graph stays fp32. Per-channel weights are what
  keep MiniLM's agreement: per-tensor weights (torch.ao's default dynamic qconfig) lost far more. Measured
  alternatives (bench/RESULTS.md, "CPU precision"): weight-only int8 (`aten._weight_int8pack_mm`, bf16 activations)
  and per-token activations through `torch._int_mm` agreed as well but ran slower than fp32 here, so they are not
  offered.

Both rewrite the GraphModule `ExportedProgram.module()` returns; for int8 each `aten.linear` whose weight is a 2-D
floating parameter of the module becomes a call to a small submodule holding the converted weights. The result still
traces into TorchScript (cpu_trace.py) like the fp32 graph.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch
import torch.fx
from tritonclient.grpc import model_config_pb2 as mc

from server.repository import CPU_PRECISION_KEY as PRECISION_KEY
from server.repository import CPU_PRECISIONS as CHOICES
from server.runtime.cpu_choice import MIN_COSINE, MIN_SPEEDUP, Budget

PRECISIONS = ("fp32", "bf16", "int8")
REPORT_KEY = "cpu_precisions"  # sparsity.json: the converter's figures per precision (server/convert/cpu_agreement.py)
MIN_COSINE_KEY = "cpu_precision_min_cosine"  # the agreement budget, per model (default 0.999)
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}  # RuntimeDescription.dtype


class PrecisionError(ValueError):
    """A config asks for a CPU precision that does not exist."""


def requested_precision(config: mc.ModelConfig, default: str = "auto") -> str:
    """The model's `cpu_precision` parameter (config wins), else the server default (`--cpu-precision`)."""
    if default not in CHOICES:
        raise PrecisionError(f"--cpu-precision {default!r} is not one of {', '.join(CHOICES)}")
    if PRECISION_KEY not in config.parameters:
        return default
    value = config.parameters[PRECISION_KEY].string_value.strip().lower()
    if value not in CHOICES:
        raise PrecisionError(f"parameter {PRECISION_KEY!r} is {value!r}; expected one of {', '.join(CHOICES)}")
    return value


def budget_from_config(config: mc.ModelConfig) -> Budget:
    """The agreement budget: `cpu_precision_min_cosine` when the config sets it, else 0.999."""
    if MIN_COSINE_KEY not in config.parameters:
        return Budget(MIN_COSINE, MIN_SPEEDUP)
    text = config.parameters[MIN_COSINE_KEY].string_value
    try:
        value = float(text)
    except ValueError:
        raise PrecisionError(f"parameter {MIN_COSINE_KEY!r} is {text!r}; expected a number in (0, 1]") from None
    if not 0.0 < value <= 1.0:
        raise PrecisionError(f"parameter {MIN_COSINE_KEY!r} is {value}; expected a number in (0, 1]")
    return Budget(value, MIN_SPEEDUP)


def disallowed(report_path: Path) -> set[str]:
    """Precisions the conversion's sparsity.json marks as over its --max-accuracy-drop (none without a report)."""
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return set()
    section = report.get(REPORT_KEY) if isinstance(report, dict) else None
    if not isinstance(section, dict):
        return set()
    return {p for p, figures in section.items() if isinstance(figures, dict) and figures.get("allowed") is False}


class Int8Linear(torch.nn.Module):
    """y = linear(x) with per-channel int8 weights and dynamically quantised activations (fbgemm), y in x's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensor types are deprecated, fbgemm's packed linear is not
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(weight, scales, zero_points, axis=0, dtype=torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.float().reshape(-1, x.shape[-1])
        y = torch.ops.quantized.linear_dynamic(flat, self._packed, True)  # reduce_range: x86's u8 x s8 headroom
        return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)


LAYERS: dict[str, type[torch.nn.Module]] = {"int8": Int8Linear}


def int8_available() -> bool:
    """fbgemm's dynamic quantised linear exists in this torch build (x86 builds have it)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def _attribute(module: torch.nn.Module, node: torch.fx.Node | object) -> torch.Tensor | None:
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    value = module
    for part in str(node.target).split("."):
        value = getattr(value, part, None)  # type: ignore[assignment]
        if value is None:
            return None
    return value if isinstance(value, torch.Tensor) else None


def _linears(module: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, torch.Tensor, torch.Tensor | None]]:
    """The graph's `aten.linear` nodes whose weight (and bias, if any) are floating attributes of the module."""
    found = []
    for node in module.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
            continue
        weight = _attribute(module, node.args[1])
        bias = _attribute(module, node.args[2]) if len(node.args) > 2 else None
        if weight is None or weight.dim() != 2 or not weight.is_floating_point():
            continue
        if len(node.args) > 2 and node.args[2] is not None and bias is None:
            continue  # a bias computed in the graph: leave the layer as it is
        found.append((node, weight, bias))
    return found


def convert(module: torch.nn.Module, precision: str) -> int:
    """Rewrite `module` to `precision` in place (pass a fresh `build_module`, not one in use); returns how many
    linear layers now run at it. fp32, or a module that is not an FX graph, is left as it is (0)."""
    if precision == "fp32" or not isinstance(module, torch.fx.GraphModule):
        return 0
    if precision == "bf16":
        count = len(_linears(module))
        if count:
            _graph_to_bf16(module)
        return count
    layer_type = LAYERS[precision]
    converted = module
    count = 0
    for node, weight, bias in _linears(converted):
        name = f"_cpu_{precision}_linear_{count}"
        converted.add_submodule(name, layer_type(weight, bias))
        with converted.graph.inserting_after(node):
            replacement = converted.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(replacement)
        converted.graph.erase_node(node)
        count += 1
    converted.graph.eliminate_dead_code()
    converted.delete_all_unused_submodules()
    converted.recompile()
    _drop_unused_attributes(converted)
    return count


def _float32_meta(node: object) -> bool:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return isinstance(value, torch.Tensor) and value.dtype == torch.float32


def _back_to_float32(graph: torch.fx.Graph, value: torch.fx.Node) -> torch.fx.Node:
    """An output node cast back to float32 when it was float32 before the rewrite."""
    if not _float32_meta(value):
        return value
    return graph.call_function(torch.ops.aten._to_copy.default, (value,), {"dtype": torch.float32})


def _graph_to_bf16(module: torch.fx.GraphModule) -> None:
    """The whole graph in bfloat16, its float32 inputs and outputs unchanged (see the module docstring)."""
    graph = module.graph
    module.to(torch.bfloat16)  # parameters and buffers
    for node in graph.nodes:  # constants the export lifted into plain tensor attributes
        if node.op == "get_attr":
            owner_path, _, leaf = str(node.target).rpartition(".")
            owner = module.get_submodule(owner_path) if owner_path else module
            value = getattr(owner, leaf, None)
            if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
                setattr(owner, leaf, value.to(torch.bfloat16))

    def bf16(arg: object) -> object:
        return torch.bfloat16 if arg is torch.float32 else arg

    for node in list(graph.nodes):
        if node.op == "placeholder" and _float32_meta(node):
            with graph.inserting_after(node):
                cast = graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.bfloat16})
            node.replace_all_uses_with(cast, delete_user_cb=lambda user, cast=cast: user is not cast)
        elif node.op == "call_function":
            node.args = tuple(bf16(a) for a in node.args)
            node.kwargs = {k: bf16(v) for k, v in node.kwargs.items()}
        elif node.op == "output":
            with graph.inserting_before(node):
                node.args = (torch.fx.node.map_arg(node.args[0], functools.partial(_back_to_float32, graph)),)
    graph.lint()
    module.recompile()


def _drop_unused_attributes(module: torch.fx.GraphModule) -> None:
    """Free the fp32 weights no graph node reads any more (the converted layers hold their own copies)."""
    used = {str(n.target) for n in module.graph.nodes if n.op == "get_attr"}
    for name, _ in list(module.named_parameters()) + list(module.named_buffers()):
        if name in used or name.startswith("_cpu_"):
            continue
        owner_path, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        if leaf in owner._parameters:
            del owner._parameters[leaf]
        elif leaf in owner._buffers:
            del owner._buffers[leaf]
