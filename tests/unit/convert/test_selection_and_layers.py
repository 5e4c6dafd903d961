"""Layer discovery in exported programs and the selection rules (shape, heads, --only/--skip)."""

from __future__ import annotations

import torch
from torch import nn

from server.convert.layers import eager_linears, expose_graph_linears
from server.convert.selection import select, shape_problem


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 128)
        self.b = nn.Linear(128, 64)
        self.odd = nn.Linear(64, 24)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.odd(torch.relu(self.b(torch.relu(self.a(x)))))))


def test_shape_rule() -> None:
    assert shape_problem((128, 64)) == ""
    assert "multiple of 16" in shape_problem((24, 64))
    assert "below 64" in shape_problem((32, 64))


def test_exported_linears_are_hookable_and_compute_the_same() -> None:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(5, 64)
    program = torch.export.export(model, (torch.randn(2, 64),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    module = program.module()
    targets = expose_graph_linears(module)
    assert [t.name for t in targets] == ["a", "b", "odd", "head"]
    assert set(module.state_dict()) == set(model.state_dict())  # no new parameters, names unchanged
    seen: list[torch.Tensor] = []
    targets[1].hook.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    torch.testing.assert_close(module(x), model(x))
    torch.testing.assert_close(seen[0], torch.relu(model.a(x)))
    with torch.no_grad():
        targets[0].param.zero_()  # pruning edits the program's own parameter
    assert torch.equal(module.state_dict()["a.weight"], torch.zeros(128, 64))


def test_selection_reasons() -> None:
    targets = eager_linears(Net())
    reasons = {d.target.name: d.reason for d in select(targets, {"head"}, [], [])}
    assert reasons["a"] == "" and reasons["b"] == ""
    assert "multiple of 16" in reasons["odd"]
    assert "output head" in reasons["head"]
    reasons = {d.target.name: d.reason for d in select(targets, {"head"}, [], ["b"])}
    assert reasons["b"] == "matched by --skip" and reasons["a"] == ""
    reasons = {d.target.name: d.reason for d in select(targets, {"head"}, ["a", "head"], [])}
    assert reasons["a"] == "" and reasons["b"] == "not matched by --only"
    assert "multiple of 16" in reasons["head"]  # named by --only, still refused by the shape rule
