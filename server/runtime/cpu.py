"""Dense on the CPU: 2:4 layers are decompressed once at load and run as ordinary dense GEMMs, through the
program traced into TorchScript when that holds (cpu_trace.py), else through the exported graph; the linear layers
in fp32, bf16 or int8 (cpu_precision.py), as the config asks or, by default, as measured at load (cpu_choice.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import Weights, build_module, load_program, load_weights
from server.batching.threads import threads_per_instance
from server.repository import PROGRAM_FILE, REPORT_FILE, WEIGHTS_FILE
from server.runtime.base import RuntimeDescription, example_shape
from server.runtime.binding import Binding, config_dtype, make_binding, tensor_inputs
from server.runtime.cpu_choice import BatchForward, Budget, Decision, Measurement, choose, measure_agreement
from server.runtime.cpu_precision import (
    DTYPE_NAMES,
    REPORT_KEY,
    budget_from_config,
    convert,
    disallowed,
    int8_available,
    requested_precision,
)
from server.runtime.cpu_trace import batch_forward
from server.text.names import REQUIRED_INPUTS

log = logging.getLogger("twofour.runtime.cpu")

SAMPLE_LENGTH = 128  # variable dims (sequence length) of the batch the precisions are compared and timed on
MAX_SAMPLE_ROWS = 64  # rows of that batch: the config's largest preferred batch size, else max_batch_size, capped


class CpuRuntime:
    """Runs the model (traced, or its exported graph) under `torch.inference_mode`; safe from several threads."""

    def __init__(self, version_dir: Path, config: mc.ModelConfig, precision: str = "fp32") -> None:
        program = load_program(version_dir / PROGRAM_FILE)
        weights = load_weights(version_dir / WEIGHTS_FILE)
        binding = make_binding(program, config)
        requested = requested_precision(config, precision)
        refused = disallowed(version_dir / REPORT_FILE)
        if requested in refused:
            raise ValueError(f"cpu_precision {requested!r} is over the conversion's --max-accuracy-drop "
                             f"(sparsity.json {REPORT_KEY!r}); choose another precision or auto")
        self._forward, how, decision = _prepare(program, weights, binding, config, requested,
                                                budget_from_config(config), refused)
        log.info("%s: cpu precision %s (requested %s): %s; %s", config.name, decision.chosen, requested,
                 decision.reason, ", ".join(_summary(m) for m in decision.candidates))
        dense = weights.dense_bytes()
        self._description = RuntimeDescription(
            device="cpu",
            dtype=DTYPE_NAMES[decision.chosen],
            sparse_layers=sorted(weights.sparse),
            dense_layers=sorted(n for n in weights.tensors if n not in weights.sparse and n.endswith("weight")),
            bytes_by_kind={"dense": dense, "sparse_2_4": 0},
            dense_equivalent_bytes=dense,
            details={"stored_bytes": weights.stored_bytes, "forward": how, "cpu_precision": decision.as_details(),
                     "instances": _instances(config), "threads_per_instance": threads_per_instance(_instances(config))},
        )

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self._forward(batch)

    def describe(self) -> RuntimeDescription:
        return self._description

    def close(self) -> None:
        self._forward = None  # type: ignore[assignment]  # drops the module, its weights and its trace


def sample_shape(config: mc.ModelConfig) -> list[int]:
    """[rows, variable-dim length] of the comparison batch: the shapes the model will be asked to run."""
    preferred = list(config.dynamic_batching.preferred_batch_size) if config.HasField("dynamic_batching") else []
    rows = max(preferred) if preferred else max(config.max_batch_size, 1)
    return [min(rows, MAX_SAMPLE_ROWS), SAMPLE_LENGTH]


def sample_inputs(config: mc.ModelConfig) -> set[str]:
    """The inputs a sample batch sends: the required ones; for a text model, whose token inputs are all optional
    (a request sends text or tokens), the ones a token request must send (`text_required_inputs`), else all."""
    inputs = tensor_inputs(config)
    required = {t.name for t in inputs if not t.optional}
    if required:
        return required
    if REQUIRED_INPUTS in config.parameters:
        return {n for n in config.parameters[REQUIRED_INPUTS].string_value.split(",") if n}
    return {t.name for t in inputs}


def sample_batch(config: mc.ModelConfig, binding: Binding, shape: list[int]) -> dict[str, torch.Tensor]:
    """Required inputs at `shape`: floats standard normal (seeded), integers and bools one (a valid token id,
    a mask that keeps every position, an index into any table)."""
    generator = torch.Generator().manual_seed(0)
    batch = {}
    wanted = sample_inputs(config)
    for tensor in tensor_inputs(config):  # BYTES inputs (text) are tokenized before a batch reaches the program
        if tensor.name not in wanted:
            continue  # filled with zeros by the binding, as in serving
        dims = example_shape(config, tensor, *shape)
        dtype = config_dtype(tensor.data_type)
        batch[tensor.name] = (torch.randn(dims, generator=generator).to(dtype) if dtype.is_floating_point
                              else torch.ones(dims, dtype=dtype))
    return batch


def _prepare(program: torch.export.ExportedProgram, weights: Weights, binding: Binding, config: mc.ModelConfig,
             requested: str, budget: Budget, refused: set[str]) -> tuple[BatchForward, str, Decision]:
    """The forward to serve, how it runs, and the precision decision behind it."""
    shape = sample_shape(config)
    budget_figures = {"min_cosine": budget.min_cosine, "min_speedup": budget.min_speedup,
                      "time_budget_s": budget.time_budget_s}
    forwards, hows, converted, failures = _build(program, weights, binding, config, requested, refused)
    if requested == "fp32":
        decision = Decision("fp32", "fp32", "requested by configuration", shape, budget_figures, [Measurement("fp32")])
        return forwards["fp32"], hows["fp32"], decision
    batch = sample_batch(config, binding, shape)
    if requested != "auto":
        if requested not in forwards:
            raise ValueError(f"cpu_precision {requested!r} cannot run this model: {failures[requested]}")
        measurements, _ = measure_agreement(forwards, batch, budget)
        for m in measurements:
            m.converted_layers = converted.get(m.precision, 0)
        chosen = measurements[-1]
        if not chosen.within_budget:
            log.warning("%s: cpu_precision %s is outside the agreement budget (min cosine %s < %s) and served "
                        "because the configuration asks for it", config.name, requested, chosen.min_cosine,
                        budget.min_cosine)
        decision = Decision(requested, requested, "requested by configuration", shape, budget_figures, measurements)
    else:
        decision = choose(forwards, batch, shape, budget, converted=converted)
    for precision, why in failures.items():
        decision.reason += f"; {precision} not built: {why}"
    return forwards[decision.chosen], hows[decision.chosen], decision


def _build(program: torch.export.ExportedProgram, weights: Weights, binding: Binding, config: mc.ModelConfig,
           requested: str, refused: set[str]
           ) -> tuple[dict[str, BatchForward], dict[str, str], dict[str, int], dict[str, str]]:
    """fp32 and the candidates `requested` calls for, each a fresh module converted and traced; why any failed."""
    wanted = {"auto": ["bf16", "int8"], "fp32": [], "bf16": ["bf16"], "int8": ["int8"]}[requested]
    forwards: dict[str, BatchForward] = {}
    hows: dict[str, str] = {}
    converted: dict[str, int] = {}
    failures: dict[str, str] = {}
    for precision in ["fp32", *wanted]:
        if precision in refused:
            failures[precision] = "over the conversion's --max-accuracy-drop (sparsity.json)"
            continue
        if precision == "int8" and not int8_available():
            failures[precision] = "this torch build has no fbgemm quantized engine"
            continue
        try:
            module = build_module(program, weights)
            converted[precision] = convert(module, precision)
            if precision != "fp32" and converted[precision] == 0:
                failures[precision] = "the model has no linear layer with parameter weights"
                continue
            forwards[precision], hows[precision] = batch_forward(module, binding, config)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot be built is not a candidate
            if precision == "fp32":
                raise
            failures[precision] = f"{type(exc).__name__}: {exc}"[:200]
    return forwards, hows, converted, failures


def _instances(config: mc.ModelConfig) -> int:
    return max(1, sum(group.count for group in config.instance_group))


def _summary(m: Measurement) -> str:
    timing = f" {m.median_ms} ms ({m.speedup}x)" if m.median_ms is not None else ""
    return f"{m.precision}{timing} cosine mean {m.mean_cosine} min {m.min_cosine}"


def create(version_dir: Path, config: mc.ModelConfig, device: str = "cpu", precision: str = "fp32") -> CpuRuntime:
    return CpuRuntime(version_dir, config, precision)
