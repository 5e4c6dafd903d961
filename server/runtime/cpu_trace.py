"""The CPU forward as one TorchScript call: the exported program traced at load, so a batch drops the GIL once.

Why: an exported program runs as a Python FX graph, one Python call per aten op. Each op releases the GIL and must
take it back, and while the event loop is busy decoding requests under load, each take-back waits for the loop to
let go (up to the interpreter's 5 ms switch interval). Beside a busy Python thread, the benchmark MLP's exported
graph ran 36 forwards in 2 s; traced, 327 (bench/RESULTS.md, "Serving, session 4"). A traced module runs the whole
graph in C++ with the GIL released once, so the compute thread and the event loop stop queueing for each other.

An exported graph's size reads are first made traceable (trace_sizes.py): without that, any model with a dynamic
sequence length (MiniLM) traced its example's length as a constant and fell back to the exported graph. Tracing
records one path through the graph, so the traced module is checked against the exported one at load, on
batch sizes and variable-dim lengths other than the traced ones; a failure or any difference keeps the exported
module, and the model's description says why. `parameters { key: "torchscript" value { string_value: "false" } }`
opts a model out. Tracing and freezing run in a private TorchScript compilation unit (jit_unit.py), so the trace
is freed with the runtime: in torch's shared unit every reload kept a copy of the weights for good.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.runtime.base import example_shape
from server.runtime.binding import Binding, call, config_dtype, fill_optional
from server.runtime.jit_unit import private_compilation_unit
from server.runtime.trace_sizes import dynamic_sizes

log = logging.getLogger("twofour.runtime.cpu")

TRACE_KEY = "torchscript"  # config.pbtxt: parameters { key: "torchscript" value { string_value: "false" } }
TRACE_SHAPE = (2, 5)  # rows, variable-dim length used for tracing
CHECK_SHAPES = ((1, 3), (3, 7))  # ...and for checking: every size differs from the traced one

Forward = Callable[..., tuple[torch.Tensor, ...]]
BatchForward = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class _Flat(torch.nn.Module):
    """The program with every input positional (in `order`) and every output in config order, as tracing needs."""

    def __init__(self, module: torch.nn.Module, binding: Binding, order: tuple[str, ...]) -> None:
        super().__init__()
        self.module, self.binding, self.order = module, binding, order

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.order, inputs, strict=True))
        result = self.module(*(named[n] for n in self.binding.positional),
                             **{n: named[n] for n in self.binding.keyword})
        if isinstance(result, dict):
            return tuple(result[n] for n in self.binding.outputs)
        if isinstance(result, torch.Tensor):
            return (result,)
        return tuple(result)[: len(self.binding.outputs)]


def input_order(binding: Binding) -> tuple[str, ...]:
    return binding.positional + binding.keyword


def example(config: mc.ModelConfig, order: tuple[str, ...], rows: int, length: int,
            generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Inputs of the config's shapes; floats random (a wrong trace must show), integers and bools zero."""
    specs = {t.name: t for t in config.input}
    tensors = []
    for name in order:
        shape = example_shape(config, specs[name], rows, length)
        dtype = config_dtype(specs[name].data_type)
        if dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=generator).to(dtype))
        else:
            tensors.append(torch.zeros(shape, dtype=dtype))
    return tuple(tensors)


def opted_out(config: mc.ModelConfig) -> bool:
    return TRACE_KEY in config.parameters and config.parameters[TRACE_KEY].string_value.lower() == "false"


def trace(module: torch.nn.Module, binding: Binding, config: mc.ModelConfig) -> tuple[Forward | None, str]:
    """The traced forward and "torchscript", or None and why the exported module stays."""
    if opted_out(config):
        return None, f"exported graph (config parameter {TRACE_KEY!r} is false)"
    order = input_order(binding)
    generator = torch.Generator().manual_seed(0)
    try:
        dynamic_sizes(module)  # sequence lengths stay dynamic in the trace (trace_sizes.py); same ops eagerly
        flat = _Flat(module, binding, order)
        flat.training = False  # not .eval(): an exported program's module refuses train(); freeze needs this flag
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: the check below is what decides
            with private_compilation_unit():  # freed with the module, not kept by torch for good (jit_unit.py)
                traced = torch.jit.freeze(torch.jit.trace(flat, example(config, order, *TRACE_SHAPE, generator),
                                                          check_trace=False))
            for rows, length in CHECK_SHAPES:
                inputs = example(config, order, rows, length, generator)
                expected, got = flat(*inputs), traced(*inputs)
                if len(expected) != len(got):
                    return None, "exported graph (the traced module returned a different number of outputs)"
                for want, have in zip(expected, got, strict=True):
                    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)
    except Exception as exc:  # noqa: BLE001 - any failure keeps the exported module, which is always correct
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        log.info("%s: tracing did not hold, serving the exported graph: %s", config.name, reason)
        return None, f"exported graph (tracing did not hold: {reason})"
    return traced, "torchscript"


def batch_forward(module: torch.nn.Module, binding: Binding, config: mc.ModelConfig) -> tuple[BatchForward, str]:
    """Config-named inputs -> config-named outputs, traced when the trace holds; and how it runs.

    A failing traced call is run again through the exported graph: TorchScript wraps the model's own error (an
    IndexError, say) in a RuntimeError with an interpreter traceback, and the client should read the original.
    """
    exported: BatchForward = functools.partial(call, module, binding)
    traced, how = trace(module, binding, config)
    if traced is None:
        return exported, how
    order = input_order(binding)

    def run(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fill_optional(binding, batch)
        try:  # the plain interpreter: no profiling executor re-specialising the graph for each new batch size
            with torch.jit.optimized_execution(False):
                values = traced(*(batch[name] for name in order))
        except Exception:  # noqa: BLE001 - see above
            return exported(batch)
        return dict(zip(binding.outputs, values, strict=True))

    return run, how
