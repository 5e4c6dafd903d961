"""bf16 (the whole graph) and int8 (the linear layers) on real exported programs: agreement with fp32 within what
the arithmetic allows, fp32 at the model boundary, integer inputs untouched, and the config parameter parsed (or
refused) clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import build_module, load_program, load_weights
from server.repository import CONFIG_FILE, RepositoryError, read_config
from server.runtime.cpu import CpuRuntime
from server.runtime.cpu_precision import (
    PrecisionError,
    budget_from_config,
    convert,
    int8_available,
    requested_precision,
)
from tests.support.models import write_model

CONFIG = """
name: "block"
backend: "twofour"
max_batch_size: 8
input [{{ name: "X" data_type: TYPE_FP32 dims: [64] }}, {{ name: "IDS" data_type: TYPE_INT64 dims: [5] }}]
output [{{ name: "Y" data_type: TYPE_FP32 dims: [64] }}]
{extra}
"""


class Block(torch.nn.Module):
    """A transformer-style feed-forward block beside an embedding lookup: two linears, a layer norm, a GELU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.table = torch.nn.Embedding(50, 64)
        self.up, self.down = torch.nn.Linear(64, 256), torch.nn.Linear(256, 64)
        self.norm = torch.nn.LayerNorm(64)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        h = self.norm(x + self.table(ids).mean(dim=1))
        return h + self.down(torch.nn.functional.gelu(self.up(h)))


def write(root: Path, extra: str = "") -> Block:
    module = Block()
    write_model(root, "block", module, (torch.randn(2, 64), torch.zeros(2, 5, dtype=torch.long)),
                CONFIG.format(extra=extra))
    return module


def inputs(rows: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"X": torch.randn(rows, 64, generator=g), "IDS": torch.randint(0, 50, (rows, 5), generator=g)}


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)


@pytest.mark.parametrize("precision,floor", [
    # bf16 keeps 8 significant bits: inputs and weights each rounded by <= 2^-9 relative, so a dot product is off
    # by ~2^-8 relative at most and 1 - cosine ~ (2^-8)^2 / 2 ~ 1e-5 per linear; every other op's output is rounded
    # once (<= 2^-9 relative, 1 - cosine ~ 4e-6 each, five of them here): 1e-4 leaves ~2x for all of it.
    ("bf16", 0.9999),
    # int8: weights per channel at amax/127, activations per call at amax/63 (7-bit range on x86); with Gaussian
    # rows amax ~ 4 sigma, the rms rounding error is ~ 4/63/sqrt(12) ~ 2% relative per linear, 1 - cosine ~ 2e-4;
    # two of them (the residual carries half the signal) stay above 0.998.
    ("int8", 0.998),
])
def test_converted_linears_agree_with_fp32_and_the_boundary_stays_fp32(tmp_path: Path, precision: str,
                                                                       floor: float) -> None:
    if precision == "int8" and not int8_available():
        pytest.skip("no fbgemm engine in this torch build")
    write(tmp_path)
    version = tmp_path / "block" / "1"
    program, weights = load_program(version / "program.pt2"), load_weights(version / "weights.safetensors")
    reference, module = build_module(program, weights), build_module(program, weights)
    assert convert(module, precision) == 2  # the two linears
    float_dtypes = {t.dtype for t in module.state_dict().values() if t.is_floating_point()}
    # bf16: every stored float (the embedding and the norm too); int8: the norm and the embedding stay fp32
    assert float_dtypes == ({torch.bfloat16} if precision == "bf16" else {torch.float32})
    batch = inputs()
    with torch.inference_mode():
        want, got = reference(batch["X"], batch["IDS"]), module(batch["X"], batch["IDS"])
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert cosine(got, want).min() >= floor
    assert not torch.equal(got, want)  # really computed at the lower precision


def test_fp32_converts_nothing(tmp_path: Path) -> None:
    write(tmp_path)
    version = tmp_path / "block" / "1"
    module = build_module(load_program(version / "program.pt2"), load_weights(version / "weights.safetensors"))
    assert convert(module, "fp32") == 0


def test_a_forced_precision_is_served_traced_and_reported(tmp_path: Path) -> None:
    module = write(tmp_path, 'parameters { key: "cpu_precision" value { string_value: "bf16" } }')
    config = read_config(tmp_path / "block", "block")
    runtime = CpuRuntime(tmp_path / "block" / "1", config, precision="fp32")  # the config wins over the default
    description = runtime.describe()
    decision = description.details["cpu_precision"]
    assert description.dtype == "bfloat16" and description.details["forward"] == "torchscript"
    assert decision["requested"] == decision["chosen"] == "bf16"
    bf16 = next(c for c in decision["candidates"] if c["precision"] == "bf16")
    assert bf16["within_budget"] and bf16["min_cosine"] >= 0.9999 and bf16["converted_layers"] == 2
    for rows in (1, 3, 8):  # other batch sizes than the load-time sample
        batch = inputs(rows)
        out = runtime.infer(dict(batch))["Y"]
        assert out.dtype == torch.float32
        assert cosine(out, module(batch["X"], batch["IDS"]).detach()).min() >= 0.9999


def test_fp32_by_default_has_no_measurement(tmp_path: Path) -> None:
    write(tmp_path)
    runtime = CpuRuntime(tmp_path / "block" / "1", read_config(tmp_path / "block", "block"))
    assert runtime.describe().dtype == "float32"
    assert runtime.describe().details["cpu_precision"]["reason"] == "requested by configuration"


def parse(extra: str) -> mc.ModelConfig:
    return text_format.Parse(CONFIG.format(extra=extra), mc.ModelConfig())


def test_the_config_parameter_wins_over_the_server_default() -> None:
    assert requested_precision(parse(""), "bf16") == "bf16"
    assert requested_precision(parse('parameters { key: "cpu_precision" value { string_value: "INT8" } }'),
                               "bf16") == "int8"
    with pytest.raises(PrecisionError, match="--cpu-precision 'fp16'"):
        requested_precision(parse(""), "fp16")


def test_an_unknown_precision_is_a_repository_error(tmp_path: Path) -> None:
    write(tmp_path)
    text = (tmp_path / "block" / CONFIG_FILE).read_text()
    (tmp_path / "block" / CONFIG_FILE).write_text(
        text + 'parameters { key: "cpu_precision" value { string_value: "fp16" } }\n')
    with pytest.raises(RepositoryError, match="parameter 'cpu_precision' is 'fp16'; expected one of auto, fp32"):
        read_config(tmp_path / "block", "block")


def test_the_agreement_budget_is_configurable_and_checked() -> None:
    assert budget_from_config(parse("")).min_cosine == 0.999
    key = 'parameters {{ key: "cpu_precision_min_cosine" value {{ string_value: "{}" }} }}'
    assert budget_from_config(parse(key.format("0.99"))).min_cosine == 0.99
    for bad in ("high", "1.5", "0"):
        with pytest.raises(PrecisionError, match="cpu_precision_min_cosine"):
            budget_from_config(parse(key.format(bad)))


def test_auto_builds_its_sample_from_the_tensor_inputs_only(tmp_path: Path) -> None:
    """A BYTES input never reaches the program (text is tokenized first), so the load-time sample leaves it out."""
    write(tmp_path)
    config_path = tmp_path / "block" / CONFIG_FILE
    config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
    config.input.add(name="caption", data_type=mc.TYPE_STRING, dims=[1])
    config_path.write_text(text_format.MessageToString(config))
    runtime = CpuRuntime(tmp_path / "block" / "1", read_config(tmp_path / "block", "block"), precision="auto")
    decision = runtime.describe().details["cpu_precision"]
    assert decision["requested"] == "auto" and decision["candidates"][0]["precision"] == "fp32"
