"""Find a model's linear layers as hookable handles, for eager modules and for exported programs alike.

The pruning passes need each layer's *input* on the calibration data. An eager `nn.Linear` gives that through a
forward pre-hook. An exported program's module has no `nn.Linear` left (just `aten.linear(x, w, b)` calls on
`get_attr` weights), so `expose_graph_linears` rewrites each such call into a tiny `LinearCall` submodule that takes
the weight as an argument: the same arithmetic, no new parameters (the state dict keeps its names), and now a module
whose pre-hook sees `x`. `addmm(b, x, t(w))` and `mm(x, t(w))` are the same product and are rewritten too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

aten = torch.ops.aten
_TRANSPOSES = {aten.t.default, aten.transpose.int, aten.permute.default}


@dataclass
class Target:
    """One linear layer: `name` is its module path, `weight_name` its weight's state-dict name."""

    name: str
    weight_name: str
    hook: nn.Module  # the module whose forward pre-hook receives the layer input as args[0]
    param: torch.Tensor  # the weight tensor itself, updated in place by pruning

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.param.shape[0]), int(self.param.shape[1])


class LinearCall(nn.Module):
    """`F.linear(x, weight, bias)` as a module, so exported graphs get a hook point per linear layer."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, weight, bias)


def eager_linears(model: nn.Module) -> list[Target]:
    """Every `nn.Linear` of an eager module, in registration order (which is execution order for HF models)."""
    return [Target(name, f"{name}.weight", module, module.weight)
            for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def _weight_attr(node: object) -> str | None:
    """The get_attr target of a weight argument, looking through one transpose (for addmm/mm)."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        return str(node.target)
    return None


def _swaps_two_dims(perm: object) -> bool:
    return isinstance(perm, (list, tuple)) and list(perm) == [1, 0]


def _transposed_attr(node: object) -> str | None:
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target in _TRANSPOSES:
        if node.target == aten.permute.default and not _swaps_two_dims(node.args[1]):
            return None
        return _weight_attr(node.args[0])
    return None


def expose_graph_linears(gm: fx.GraphModule) -> list[Target]:
    """Rewrite linear/addmm/mm-on-a-weight calls of an exported module into `LinearCall`s; return them in graph
    order."""
    targets: list[Target] = []
    seen: set[str] = set()
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        weight: str | None = None
        x = bias = None
        if node.target == aten.linear.default:
            weight = _weight_attr(node.args[1])
            x, bias = node.args[0], (node.args[2] if len(node.args) > 2 else None)
        elif node.target == aten.addmm.default and not node.kwargs:
            weight = _transposed_attr(node.args[2])
            x, bias = node.args[1], node.args[0]
        elif node.target == aten.mm.default:
            weight = _transposed_attr(node.args[1])
            x = node.args[0]
        if weight is None or not _is_param(gm, weight) or weight in seen:
            continue  # not a parameter, or a weight shared by several products (tied): left alone
        seen.add(weight)
        weight_node = node.args[1] if node.target == aten.linear.default else (
            node.args[2].args[0] if node.target == aten.addmm.default else node.args[1].args[0])
        module_name = f"_twofour_linear_{len(targets)}"
        gm.add_submodule(module_name, LinearCall())
        with graph.inserting_before(node):
            call = graph.call_module(module_name, (x, weight_node, bias))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        name = weight[: -len(".weight")] if weight.endswith(".weight") else weight
        targets.append(Target(name, weight, gm.get_submodule(module_name), gm.get_parameter(weight)))
    graph.eliminate_dead_code()
    gm.recompile()
    return targets


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
    except AttributeError:
        return False
    return True
