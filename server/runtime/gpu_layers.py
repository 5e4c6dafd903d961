"""Rewrite an exported program's 2:4 linear calls so each goes through a `SwitchLinear` that picks its kernel.

`program.module()` is an fx GraphModule whose linears are `aten.linear.default(x, <get_attr weight>, <bias>)`.
Each such call on a 2:4 weight is replaced by a call to a SwitchLinear submodule that owns the weight (dense, a
sparse kernel, or both) and chooses by the number of rows it is given. Rewriting the graph's call nodes keeps
the rest of the program untouched and makes the dispatch visible in `module.code`. The sparse kernel is
injected (`SparseFactory`), so the rewrite and the dispatch are tested on CPU with a counting dense stand-in.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from server.runtime.gpu_rules import bucket_for
from server.sparsity.quantize import QuantizedLayer

SparseKernel = Callable[[torch.Tensor], torch.Tensor]  # 2-D activations [rows, in] -> [rows, out]
SparseFactory = Callable[[torch.Tensor, torch.Tensor | None], SparseKernel]  # (dense weight, bias) -> kernel
QuantFactory = Callable[[QuantizedLayer, torch.Tensor | None], SparseKernel]  # (stored codes + scales, bias)
LINEAR = torch.ops.aten.linear.default


class SwitchLinear(torch.nn.Module):
    """A linear layer that runs dense or 2:4 per call, by the row count of its input.

    `sparse_rows` are the measured row buckets where the sparse kernel won; a call of n rows uses the bucket
    `bucket_for(n, measured_rows)`. While `recording`, it notes the row counts it sees (the load-time probe).
    """

    def __init__(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.layer = name
        self.out_features, self.in_features = int(weight.shape[0]), int(weight.shape[1])
        self.dtype = weight.dtype
        self.weight: torch.Tensor | None = weight
        self.bias: torch.Tensor | None = bias
        self.sparse: SparseKernel | None = None
        self.measured_rows: list[int] = []
        self.sparse_rows: frozenset[int] = frozenset()
        self.recording = False
        self.rows_seen: list[int] = []

    def attach_sparse(self, factory: SparseFactory) -> None:
        assert self.weight is not None, "the dense weight is needed to build the sparse one"
        self.sparse = factory(self.weight, self.bias)

    def choose(self, measured_rows: list[int], sparse_rows: set[int], keep_dense: bool, release: bool = True) -> None:
        """Install the decision and, with `release`, drop whichever weight no bucket uses (memory is the point of
        2:4). Without it both weights stay until `release_unused`, so the whole-model check can still flip a
        bucket back to dense (gpu_bucket_check.py)."""
        if sparse_rows and self.sparse is None:
            raise ValueError(f"{self.layer}: sparse buckets chosen but no sparse kernel attached")
        self.measured_rows = sorted(measured_rows)
        self.sparse_rows = frozenset(sparse_rows)
        if release:
            self.release_unused(keep_dense)

    def release_unused(self, keep_dense: bool) -> None:
        if not self.sparse_rows:
            self.sparse = None
        elif self.sparse_rows.issuperset(self.measured_rows) or not keep_dense:
            self.weight = None

    def set_bucket_kernel(self, rows: int, sparse: bool) -> None:
        """Run the bucket of `rows` rows sparse or dense; both weights must still be held."""
        if self.weight is None or self.sparse is None:
            raise ValueError(f"{self.layer}: a bucket's kernel can change only while both weights are held")
        self.sparse_rows = self.sparse_rows | {rows} if sparse else self.sparse_rows - {rows}

    def uses_sparse(self, rows: int) -> bool:
        if self.sparse is None:
            return False
        if self.weight is None:
            return True
        return bucket_for(rows, self.measured_rows) in self.sparse_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype:
            x = x.to(self.dtype)  # never hand fp32 to a 2:4 kernel (CUTLASS would read it as 1:2)
        leading = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        rows = int(x2.shape[0])
        if self.recording:
            self.rows_seen.append(rows)
        if self.uses_sparse(rows):
            assert self.sparse is not None
            out = self.sparse(x2.contiguous())  # the 2:4 kernels pad and transpose a row-major activation
        else:
            assert self.weight is not None
            out = F.linear(x2, self.weight, self.bias)
        return out.reshape(*leading, self.out_features)


def _owner(module: torch.nn.Module, target: str) -> tuple[torch.nn.Module, str]:
    path, _, leaf = target.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def _fetch(module: torch.nn.Module, node: torch.fx.Node | None) -> torch.Tensor | None:
    if node is None:
        return None
    owner, leaf = _owner(module, str(node.target))
    return getattr(owner, leaf)


def install_switches(module: torch.fx.GraphModule, names: set[str]) -> dict[str, SwitchLinear]:
    """Route every `aten.linear` on a weight in `names` through a SwitchLinear; returns them by weight name.

    The original parameters are removed from the module once no other node reads them, so each weight lives
    exactly once. Weights in `names` used by something other than a linear stay dense (not returned).
    """
    graph = module.graph
    switches: dict[str, SwitchLinear] = {}
    moved: set[str] = set()  # get_attr targets whose tensors now live in a switch
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not LINEAR:
            continue
        x, weight_node, *rest = node.args
        bias_node = rest[0] if rest else node.kwargs.get("bias")
        if not isinstance(weight_node, torch.fx.Node) or weight_node.op != "get_attr":
            continue
        name = str(weight_node.target)
        if name not in names or name in switches:  # a weight shared by two linears keeps the first switch
            continue
        if bias_node is not None and (not isinstance(bias_node, torch.fx.Node) or bias_node.op != "get_attr"):
            continue
        weight = _fetch(module, weight_node)
        assert weight is not None
        bias = _fetch(module, bias_node)
        switch = SwitchLinear(name, weight.detach(), None if bias is None else bias.detach())
        sub = "twofour_switch_" + name.replace(".", "_")
        module.add_submodule(sub, switch)
        with graph.inserting_after(node):
            call = graph.call_module(sub, (x,))
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        switches[name] = switch
        moved.update(str(n.target) for n in (weight_node, bias_node) if n is not None)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users and str(node.target) in moved:
            owner, leaf = _owner(module, str(node.target))
            graph.erase_node(node)
            owner._parameters.pop(leaf, None)
            owner._buffers.pop(leaf, None)
    graph.lint()
    module.recompile()
    return switches


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Device bytes of a tensor, including a sparse semi-structured tensor's packed values and metadata."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor) is not torch.Tensor and not isinstance(tensor, torch.nn.Parameter):
        inner_names, _ = flatten()
        return sum(tensor_bytes(getattr(tensor, n)) for n in inner_names if getattr(tensor, n) is not None)
    return tensor.numel() * tensor.element_size()
