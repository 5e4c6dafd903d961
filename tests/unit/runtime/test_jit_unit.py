"""Tracing inside `private_compilation_unit`: nothing stays in torch's process-wide TorchScript state, what was traced
keeps working, and TorchScript compiled afterwards is unaffected. Real torch throughout, no mocks."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.jit._recursive as jit_recursive
import torch.jit._state as jit_state

from server.runtime.jit_unit import private_compilation_unit, shared_unit

ROOT = Path(__file__).resolve().parents[3]


class TwoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def torch_jit_state() -> tuple[int, int, int]:
    """What torch keeps for good about compiled code: shared-unit functions, compiled module types, the type store."""
    store = jit_recursive.concrete_type_store
    return (len(shared_unit().get_functions()), len(store.methods_compiled),
            sum(len(known) for known in store.type_store.values()))


def test_a_module_traced_and_frozen_inside_leaves_torch_as_it_was_and_still_runs() -> None:
    module, x = TwoLayers().eval(), torch.randn(3, 8)
    gc.collect()
    before = torch_jit_state()
    with torch.no_grad():
        with private_compilation_unit():
            traced = torch.jit.freeze(torch.jit.trace(module, x, check_trace=False))
        assert torch_jit_state() == before
        torch.testing.assert_close(traced(x), module(x))  # the private unit lives on with the module
    del traced
    gc.collect()
    assert torch_jit_state() == before


def test_the_shared_unit_comes_back_when_tracing_fails() -> None:
    shared = shared_unit()
    with pytest.raises(RuntimeError, match="no trace"), private_compilation_unit():
        assert shared_unit() is not shared
        raise RuntimeError("no trace")
    assert shared_unit() is shared
    assert jit_state._python_cu is shared


def test_a_class_scripted_inside_scripts_again_afterwards(tmp_path: Path) -> None:
    """torch's type store would hand the later script the type compiled inside, whose methods died with the private
    unit: that crashes the interpreter, so this runs in a child process (from a file: scripting reads the source)."""
    script = tmp_path / "script_twice.py"
    script.write_text(
        "import gc, torch\n"
        "from server.runtime.jit_unit import private_compilation_unit\n"
        "class Add(torch.nn.Module):\n"
        "    def forward(self, x): return x + 1\n"
        "with private_compilation_unit():\n"
        "    inside = torch.jit.script(Add())\n"
        "    assert inside(torch.zeros(1)).item() == 1\n"
        "del inside; gc.collect()\n"
        "print(torch.jit.script(Add())(torch.zeros(1)).item())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"
