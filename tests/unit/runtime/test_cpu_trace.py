"""The CPU runtime's traced forward: used when it matches the exported program, never when it does not.

Every case loads a real exported program from a real model repository directory and compares the runtime's answers
with the original torch module's."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
import torch.jit._recursive as jit_recursive
import torch.jit._state as jit_state
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.repository import CONFIG_FILE
from server.runtime.cpu import CpuRuntime
from tests.support.models import EMBED_CONFIG, MIXED_CONFIG, MLP_CONFIG, Embed, Mixed, SmallMLP, write_model

LENGTH_CONFIG = """
name: "mean"
backend: "twofour"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [-1] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [1] }]
"""


class MeanByLength(torch.nn.Module):
    """Divides by the variable dim's length: exported as `sym_size`, which trace_sizes.py keeps dynamic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True) / x.shape[1]


class FilledByLength(torch.nn.Module):
    """Builds a tensor whose shape is a size (`aten.full`, outside trace_sizes.py's table): the trace must not hold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1), 1.0) * x.shape[1]


class PositionSlice(torch.nn.Module):
    """What a Hugging Face encoder does with its length: slice a position buffer, arange a mask, view into heads."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("positions", torch.arange(64).reshape(1, 64))
        self.table = torch.nn.Embedding(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, length = x.shape[0], x.shape[1]
        position = self.table(self.positions[:, :length])  # (1, length, 4)
        causal = torch.arange(length)[None, :] <= torch.arange(length)[:, None]  # (length, length)
        mixed = (causal.float() @ (x[..., None] + position)).view(rows, length, 2, 2)
        return mixed.expand(rows, length, 2, 2).reshape(rows, -1).sum(dim=1, keepdim=True)


def load(root: Path, name: str) -> CpuRuntime:
    config = text_format.Parse((root / name / CONFIG_FILE).read_text(), mc.ModelConfig())
    return CpuRuntime(root / name / "1", config)


def test_the_mlp_runs_traced_and_matches_the_module(tmp_path: Path) -> None:
    module = SmallMLP(seed=3)
    write_model(tmp_path, "mlp", module, (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=""))
    runtime = load(tmp_path, "mlp")
    assert runtime.describe().details["forward"] == "torchscript"
    for rows in (1, 2, 5, 8):
        x = torch.randn(rows, 16)
        torch.testing.assert_close(runtime.infer({"INPUT0": x})["OUTPUT0"], module(x).detach())


def test_a_config_can_opt_out(tmp_path: Path) -> None:
    extra = 'parameters { key: "torchscript" value { string_value: "false" } }'
    write_model(tmp_path, "mlp", SmallMLP(seed=3), (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=extra))
    assert "is false" in load(tmp_path, "mlp").describe().details["forward"]


def write_length_model(root: Path, module: torch.nn.Module) -> CpuRuntime:
    """`module` exported with a dynamic batch and length into a repository, and loaded."""
    length = torch.export.Dim("length", min=2, max=64)
    program = torch.export.export(module, (torch.randn(2, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8), 1: length},))
    from server.artifacts import save_program, save_weights

    version = root / "mean" / "1"
    version.mkdir(parents=True)
    save_program(program, version / "program.pt2")
    save_weights(dict(module.state_dict()), set(), version / "weights.safetensors")
    (root / "mean" / CONFIG_FILE).write_text(LENGTH_CONFIG)
    return load(root, "mean")


def test_a_trace_that_would_bake_in_a_length_is_refused_and_answers_stay_right(tmp_path: Path) -> None:
    runtime = write_length_model(tmp_path, FilledByLength())
    assert runtime.describe().details["forward"].startswith("exported graph (tracing did not hold")
    for length_now in (3, 11):
        x = torch.randn(2, length_now)
        torch.testing.assert_close(runtime.infer({"X": x})["Y"], torch.full((2, 1), float(length_now)))


@pytest.mark.parametrize("module", [MeanByLength(), PositionSlice()], ids=["mean", "position-slice"])
def test_a_length_read_from_the_input_stays_dynamic_in_the_trace(tmp_path: Path, module: torch.nn.Module) -> None:
    """The exported graph reads lengths with sym_size; traced as is, they were the example's constants (MiniLM)."""
    module.eval()
    runtime = write_length_model(tmp_path, module)
    assert runtime.describe().details["forward"] == "torchscript"
    for rows, length_now in ((1, 3), (2, 11), (5, 64)):
        x = torch.randn(rows, length_now)
        with torch.no_grad():
            torch.testing.assert_close(runtime.infer({"X": x})["Y"], module(x))


def test_several_dtypes_and_a_dict_output_map_back_by_name(tmp_path: Path) -> None:
    example = (torch.ones(2, 3, dtype=torch.float16), torch.ones(2, 3, dtype=torch.int32),
               torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bfloat16))
    write_model(tmp_path, "mixed", Mixed(), example, MIXED_CONFIG)
    runtime = load(tmp_path, "mixed")
    assert runtime.describe().details["forward"] == "torchscript"
    batch = {"A": torch.randn(3, 3).half(), "B": torch.arange(9, dtype=torch.int32).reshape(3, 3),
             "C": torch.tensor([[True, False, True]] * 3), "D": torch.randn(3, 3).bfloat16()}
    expected = Mixed()(*batch.values())
    got = runtime.infer(dict(batch))
    assert list(got) == ["A2", "B1", "NOTC", "D"]
    for name in got:
        torch.testing.assert_close(got[name], expected[name])


def test_a_models_own_error_reaches_the_caller_as_itself(tmp_path: Path) -> None:
    """TorchScript would wrap it in a RuntimeError with an interpreter traceback; the client must read the model's."""
    write_model(tmp_path, "embed", Embed(), (torch.zeros(2, 3, dtype=torch.int64),), EMBED_CONFIG)
    runtime = load(tmp_path, "embed")
    assert runtime.describe().details["forward"] == "torchscript"
    with pytest.raises(IndexError, match="index out of range"):
        runtime.infer({"INDEX": torch.tensor([[1, 2, 99]])})
    torch.testing.assert_close(runtime.infer({"INDEX": torch.tensor([[1, 2, 3]])})["VECTORS"],
                               Embed()(torch.tensor([[1, 2, 3]])).detach())


def test_reloading_a_traced_model_leaves_nothing_behind_in_torch(tmp_path: Path) -> None:
    """Each load used to add its traced and frozen methods, the frozen ones holding the weights as constants, to
    torch's process-wide CompilationUnit for good (a model with 4.1 MiB of weights: +196 MiB of RSS over 45
    reloads). Counts what torch keeps, not memory: no timing or RSS thresholds."""
    write_model(tmp_path, "mlp", SmallMLP(seed=3), (torch.randn(2, 16),), MLP_CONFIG.format(name="mlp", extra=""))
    x = torch.randn(3, 16)

    def load_serve_close() -> None:
        runtime = load(tmp_path, "mlp")
        assert runtime.describe().details["forward"] == "torchscript"
        torch.testing.assert_close(runtime.infer({"INPUT0": x})["OUTPUT0"], SmallMLP(seed=3)(x).detach())
        runtime.close()

    def kept_by_torch() -> tuple[int, int]:
        return len(jit_state._python_cu.get_functions()), len(jit_recursive.concrete_type_store.methods_compiled)

    load_serve_close()  # whatever torch sets up once per process
    gc.collect()
    before = kept_by_torch()
    for _ in range(3):
        load_serve_close()
    gc.collect()
    assert kept_by_torch() == before
