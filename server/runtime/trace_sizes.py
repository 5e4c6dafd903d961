"""Make an exported graph's shape arithmetic traceable, so `torch.jit.trace` keeps sequence lengths dynamic.

Why: an exported program reads a dynamic dim with `torch.ops.aten.sym_size.int(x, d)`, which returns a plain
Python int while tracing, so the trace records the traced example's length as a constant: every later batch of
another length fails (MiniLM: "The size of tensor a (3) must match the size of tensor b (5)", from the position-id
slice and the attention-mask aranges) and the model ran its exported graph eagerly, one GIL hand-off per op.
`x.size(d)` instead is recorded by the tracer as `aten::size` and returns a traced value; but the exported graph
then passes that value to `torch.ops.aten.*` overloads, whose argument parsing refuses a tensor for a Scalar or an
int. So each size read becomes `x.size(d)` and each op consuming one is retargeted to the public call of the same
aten op (`torch.arange`, `Tensor.view` ...), which accepts it. The ops computed are the same ones; cpu_trace.py
still checks the traced module against the exported one at other shapes, and an op outside the table below keeps
the plain int (so that trace fails its check and the exported graph is served, as before).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

aten = torch.ops.aten


def _slice(x: torch.Tensor, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> torch.Tensor:
    return x[(slice(None),) * dim + (slice(start, end, step),)]


def _arange(end: Any, **kwargs: Any) -> torch.Tensor:
    return torch.arange(end, **kwargs)


def _view(x: torch.Tensor, shape: list[Any]) -> torch.Tensor:
    return x.view(shape)


def _reshape(x: torch.Tensor, shape: list[Any]) -> torch.Tensor:
    return x.reshape(shape)


def _expand(x: torch.Tensor, shape: list[Any], implicit: bool = False) -> torch.Tensor:
    return x.expand(shape)


# aten overloads that take a size as an argument -> the public call of the same op, which accepts a traced size
PUBLIC: dict[Any, Callable[..., torch.Tensor]] = {
    aten.arange.default: _arange, aten.slice.Tensor: _slice, aten.view.default: _view,
    aten.reshape.default: _reshape, aten.expand.default: _expand,
}
_ARITHMETIC = (operator.add, operator.sub, operator.mul, operator.floordiv, operator.neg)


def dynamic_sizes(module: torch.nn.Module) -> int:
    """Rewrite `module`'s graph in place (a GraphModule; anything else is left alone); how many size reads changed."""
    if not isinstance(module, fx.GraphModule):
        return 0
    graph = module.graph
    sizes: set[fx.Node] = set()
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is aten.sym_size.int:
            with graph.inserting_before(node):
                size = graph.call_method("size", node.args)
            node.replace_all_uses_with(size)
            graph.erase_node(node)
            sizes.add(size)
    if not sizes:
        return 0
    for node in graph.nodes:  # in order, so arithmetic on a size is itself a size before its users are seen
        uses_size = any(arg in sizes for arg in node.all_input_nodes)
        if node.op == "call_function" and uses_size:
            if node.target in _ARITHMETIC:
                sizes.add(node)
            elif node.target in PUBLIC:
                node.target = PUBLIC[node.target]
    graph.lint()
    module.recompile()
    return len(sizes)
