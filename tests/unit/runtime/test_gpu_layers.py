"""The fx rewrite that routes 2:4 linears through SwitchLinear, proven on CPU with a counting dense stand-in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from server.runtime.gpu_layers import LINEAR, SwitchLinear, install_switches, tensor_bytes
from tests.support.models import prune_2_4


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up = torch.nn.Linear(64, 128)
        self.down = torch.nn.Linear(128, 64, bias=False)
        self.head = torch.nn.Linear(64, 4)
        with torch.no_grad():
            self.up.weight.copy_(prune_2_4(self.up.weight))
            self.down.weight.copy_(prune_2_4(self.down.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


class CountingKernel:
    """Stands in for the 2:4 kernel: the same math, dense, counting calls and the rows it was given."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias, self.rows = weight.clone(), bias, []  # type: ignore[var-annotated]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return F.linear(x, self.weight, self.bias)


def exported(model: torch.nn.Module) -> torch.fx.GraphModule:
    example = (torch.randn(2, 5, 64),)
    program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("b")},))
    return program.module()  # type: ignore[return-value]


def test_rewrite_routes_only_the_named_linears_and_keeps_outputs() -> None:
    model = Block().eval()
    module = exported(model)
    switches = install_switches(module, {"up.weight", "down.weight"})
    assert set(switches) == {"up.weight", "down.weight"}
    linears = [n for n in module.graph.nodes if n.op == "call_function" and n.target is LINEAR]
    assert len(linears) == 1  # only the head is still a plain linear
    names = set(module.state_dict())
    assert "up.weight" not in names and "up.bias" not in names and "down.weight" not in names
    assert "head.weight" in names  # untouched
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(module(x), model(x))


def test_dispatch_by_rows_uses_the_sparse_kernel_only_where_it_won() -> None:
    model = Block().eval()
    module = exported(model)
    switches = install_switches(module, {"up.weight", "down.weight"})
    up = switches["up.weight"]
    up.attach_sparse(CountingKernel)
    up.choose(measured_rows=[5, 10, 20, 40], sparse_rows={20, 40}, keep_dense=True)
    assert up.weight is not None  # both kept: the winner depends on the batch
    kernel = up.sparse
    assert isinstance(kernel, CountingKernel)
    for batch in (1, 2, 3, 4, 8, 9):
        x = torch.randn(batch, 5, 64)
        torch.testing.assert_close(module(x), model(x))
    # rows = batch x 5 tokens: 5, 10 -> dense; 15 -> bucket 20 sparse; 20 -> sparse; 40 -> sparse; 45 -> largest
    assert kernel.rows == [15, 20, 40, 45]


def test_memory_mode_drops_the_dense_copy() -> None:
    module = exported(Block().eval())
    switch = install_switches(module, {"up.weight"})["up.weight"]
    switch.attach_sparse(CountingKernel)
    switch.choose(measured_rows=[5, 10], sparse_rows={5, 10}, keep_dense=False)
    assert switch.weight is None and switch.uses_sparse(1) and switch.uses_sparse(10_000)
    dense_only = install_switches(exported(Block().eval()), {"down.weight"})["down.weight"]
    dense_only.attach_sparse(CountingKernel)
    dense_only.choose(measured_rows=[5], sparse_rows=set(), keep_dense=False)
    assert dense_only.sparse is None and dense_only.weight is not None


def test_switch_casts_activations_to_its_dtype() -> None:
    weight = prune_2_4(torch.randn(16, 32)).half()
    switch = SwitchLinear("w", weight, None)
    switch.attach_sparse(CountingKernel)
    switch.choose([1], {1}, keep_dense=False)
    out = switch(torch.randn(2, 3, 32))  # fp32 in: never handed to a 2:4 kernel as fp32
    assert out.dtype == torch.float16 and out.shape == (2, 3, 16)


def test_recording_notes_rows() -> None:
    switch = SwitchLinear("w", torch.randn(8, 16), None)
    switch.recording = True
    switch(torch.randn(4, 7, 16))
    assert switch.rows_seen == [28]


def test_tensor_bytes_counts_plain_tensors() -> None:
    assert tensor_bytes(torch.zeros(3, 4, dtype=torch.float16)) == 24
    assert tensor_bytes(torch.nn.Parameter(torch.zeros(10))) == 40
