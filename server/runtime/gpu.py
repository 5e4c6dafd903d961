"""CUDA runtime: fp16/bf16, 2:4 layers on sparse Tensor Cores where measurement says they win.

Load: decompress the repository weights, cast to the compute dtype, move to the GPU, route every 2:4 linear
through a SwitchLinear (gpu_layers), probe the model at each batch size the batcher can form (which also records
the row count every layer sees), time dense vs 2:4 per layer at those rows and convert the winners (gpu_plan,
gpu_decision), then run every batch size once more with the final kernels, so the model is warm before it
reports ready. `GpuRuntime` takes the device, kernel factory and timer as parameters: the same pipeline runs on
CPU in the unit tests with a dense stand-in for the kernel and a deterministic timer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import build_module, load_program, load_weights
from server.errors import ErrorKind, ServingError
from server.repository import PROGRAM_FILE, WEIGHTS_FILE
from server.runtime.base import RuntimeDescription, example_shape
from server.runtime.binding import call, config_dtype, make_binding, tensor_inputs
from server.runtime.gpu_bucket_check import ModelTimer, check_buckets
from server.runtime.gpu_decision import DEFAULT_MARGIN, CachedTimer, Timer, format_table
from server.runtime.gpu_graphs import Capture, GraphBuckets
from server.runtime.gpu_layers import QuantFactory, SparseFactory, install_switches
from server.runtime.gpu_plan import LayerPlanner, first_line
from server.runtime.gpu_report import describe_gpu_model
from server.runtime.gpu_rules import batch_sizes, cuda_graphs_problem, sequence_length

log = logging.getLogger("twofour.runtime.gpu")

CUDA_WORDS = ("CUDA", "cuBLAS", "CUBLAS", "cuSPARSELt", "CUSPARSE", "cudnn", "CUDNN")


class GpuRuntime:
    """One model version on one GPU (or, in tests, the same pipeline on CPU with injected kernels)."""

    def __init__(self, version_dir: Path, config: mc.ModelConfig, *, device: torch.device, dtype: torch.dtype,
                 keep_dense: bool, backend: str, sparse_factory: SparseFactory, timer: Timer,
                 margin: float = DEFAULT_MARGIN, capture: Capture | None = None,
                 model_timer: ModelTimer | None = None, quant_kernels: dict[str, QuantFactory] | None = None) -> None:
        """`capture`: how to record CUDA graphs (gpu_graphs.cuda_capture); None serves eagerly. `model_timer`:
        how the whole-model check times a bucket's graph (default: replay it, synchronised). `quant_kernels`:
        the FP8/INT8 kernels this GPU runs, by gpu_choice name; a layer stored quantized competes with them."""
        started = time.perf_counter()
        self._device, self._dtype, self._config = device, dtype, config
        program = load_program(version_dir / PROGRAM_FILE)
        weights = load_weights(version_dir / WEIGHTS_FILE)
        self._binding = make_binding(program, config)
        self._out_dtypes = {t.name: config_dtype(t.data_type) for t in config.output}
        module = build_module(program, weights).to(device=device, dtype=dtype)
        self._module: torch.nn.Module | None = module
        self._graphs: GraphBuckets | None = None  # captured after the kernels are chosen
        self._switches = install_switches(module, weights.sparse)  # type: ignore[arg-type]
        self._batches = batch_sizes(config)
        rows = self._probe()
        probed = time.perf_counter()
        planner = LayerPlanner(self._switches, weights.quantized, dict(quant_kernels or {}), device, dtype, backend)
        cached = CachedTimer(timer)
        decisions = [planner.decide(name, rows.get(name, {}), cached, keep_dense, margin)
                     for name in sorted(weights.sparse)]
        measured = time.perf_counter()
        check = keep_dense and capture is not None  # whole-model check per bucket, which needs both weights
        for decision in decisions:
            planner.apply(decision, sparse_factory, keep_dense, release=not check)
        if hasattr(timer, "clear"):
            timer.clear()
        self._probe()  # warmup with the final kernels, before the registry marks the model READY
        graphs = self._capture(capture)
        checked: list[dict[str, Any]] = []
        if check and self._graphs is not None:
            with torch.inference_mode():
                checked = check_buckets(self._graphs, self._switches, rows, decisions, margin,
                                        model_timer or self._replay_timer(self._graphs))
        for switch in self._switches.values():
            switch.release_unused(keep_dense)
        layers = [d.as_dict() for d in decisions]
        self._description = describe_gpu_model(module, self._switches, weights, self._device, self._dtype, {
            "backend": backend, "mode": "dispatch" if keep_dense else "memory", "margin": margin,
            "batch_sizes": self._batches, "layers": layers})
        self._description.details.update(cuda_graphs=graphs, bucket_check=checked)
        self._description.details["load_seconds"] = {
            "probe": round(probed - started, 3), "measure": round(measured - probed, 3),
            "total": round(time.perf_counter() - started, 3), "timed_kernels": cached.calls}
        log.info("%s v%s on %s (%s, %s): 2:4 decision table\n%s", config.name, version_dir.name, device,
                 self._description.dtype, backend, format_table(layers))

    # -- load steps ------------------------------------------------------------------------------------
    def _example(self, batch: int) -> dict[str, torch.Tensor]:
        """Zero inputs of the config's shapes at `batch` rows; variable dims take the probe sequence length."""
        length = sequence_length(self._config)
        text_model = len(tensor_inputs(self._config)) < len(self._config.input)  # every token input optional
        return {t.name: torch.zeros(example_shape(self._config, t, batch, length), dtype=config_dtype(t.data_type))
                for t in tensor_inputs(self._config) if not t.optional or text_model}

    def _probe(self) -> dict[str, dict[int, int]]:
        """Run every batch size once; returns layer -> {batch size: rows its GEMM saw}."""
        seen: dict[str, dict[int, int]] = {}
        for switch in self._switches.values():
            switch.recording = True
        try:
            for batch in self._batches:
                for switch in self._switches.values():
                    switch.rows_seen.clear()
                try:
                    self.infer(self._example(batch))
                except ServingError as exc:
                    raise ValueError(f"GPU runtime: running the model at batch size {batch} failed at load: "
                                     f"{exc.message}") from None
                for name, switch in self._switches.items():
                    if switch.rows_seen:
                        seen.setdefault(name, {})[batch] = switch.rows_seen[0]
        finally:
            for switch in self._switches.values():
                switch.recording = False
                switch.rows_seen.clear()
        return seen

    def _capture(self, capture: Capture | None) -> dict[str, Any]:
        """Capture one graph per batch bucket with the final kernels; on any failure serve eagerly, and say why."""
        problem = "not requested" if capture is None else cuda_graphs_problem(self._config)
        if problem is None and capture is not None:
            module = self._module
            assert module is not None

            def forward(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                return call(module, self._binding, inputs)

            examples = {b: self._device_inputs(self._example(b)) for b in self._batches}
            try:
                with torch.inference_mode():
                    self._graphs = GraphBuckets(forward, examples, capture)
            except RuntimeError as exc:
                problem = f"capture failed: {first_line(exc)}"
                log.warning("%s: CUDA graphs off, serving eagerly (%s)", self._config.name, problem)
            finally:
                if self._device.type == "cuda":
                    torch.cuda.empty_cache()
        if problem is not None:
            return {"enabled": False, "reason": problem}
        assert self._graphs is not None
        return {"enabled": True, "buckets": self._graphs.buckets}

    def _replay_timer(self, graphs: GraphBuckets) -> ModelTimer:
        synchronize = torch.cuda.synchronize if self._device.type == "cuda" else (lambda: None)
        return lambda bucket, _layers: graphs.replay_seconds(bucket, synchronize)

    def _device_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: t.to(self._device, self._dtype) if t.is_floating_point() else t.to(self._device)
                for n, t in batch.items()}

    # -- serving ---------------------------------------------------------------------------------------
    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        module = self._module
        if module is None:
            raise ServingError(ErrorKind.UNAVAILABLE, "model version was unloaded")
        rows = next(iter(batch.values())).shape[0] if batch and self._config.max_batch_size > 0 else 1
        try:
            with torch.inference_mode():
                inputs = self._device_inputs(batch)
                graphs = self._graphs
                outputs = graphs.run(inputs) if graphs is not None else None
                if outputs is None:
                    outputs = call(module, self._binding, inputs)
                return {n: t.to("cpu", self._out_dtypes.get(n, t.dtype)) for n, t in outputs.items()}
        except torch.OutOfMemoryError as exc:
            if self._device.type == "cuda":
                torch.cuda.empty_cache()
            raise ServingError(ErrorKind.INTERNAL, f"GPU out of memory running a batch of {rows} rows; "
                                                   f"lower max_batch_size ({first_line(exc)})") from None
        except RuntimeError as exc:  # torch.AcceleratorError is a RuntimeError
            if type(exc).__name__ == "AcceleratorError" or any(word in str(exc) for word in CUDA_WORDS):
                raise ServingError(ErrorKind.INTERNAL, f"GPU execution failed for this batch of {rows} rows: "
                                                       f"{first_line(exc)}") from None
            raise

    def describe(self) -> RuntimeDescription:
        return self._description

    def close(self) -> None:
        self._module = None
        self._graphs = None
        self._switches = {}
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def create(version_dir: Path, config: mc.ModelConfig, device: str = "cuda", dtype: str = "auto",
           keep_dense: bool = False) -> Any:
    """The runtime for `--device cuda`: places the model per instance_group, with the real 2:4 kernels."""
    from server.runtime import gpu_cusparselt, gpu_graphs, gpu_rules, gpu_timing
    from server.runtime.select import MIN_COMPUTE_CAPABILITY

    index = gpu_rules.gpu_index(config, torch.cuda.device_count())
    if index is None:
        from server.runtime import cpu

        log.info("%s: instance_group asks for KIND_CPU only; serving it on the CPU runtime", config.name)
        return cpu.create(version_dir, config, "cpu")
    capability = torch.cuda.get_device_capability(index)
    if capability < MIN_COMPUTE_CAPABILITY:
        raise ValueError(f"GPU {index} has compute capability {capability[0]}.{capability[1]}; 2:4 needs >= 8.0")
    compute = gpu_rules.compute_dtype(dtype, config)
    backend = gpu_timing.available_backend(capability)
    torch_device = torch.device("cuda", index)
    factory = gpu_timing.semi_structured_factory(backend)
    quant = gpu_timing.quant_factories(capability, backend, compute, torch_device)
    version = gpu_cusparselt.log_version() if backend == "cusparselt" else None
    graphs = gpu_rules.cuda_graphs_problem(config) is None  # decisions are timed the way the model will run
    with torch.cuda.device(index):
        runtime = GpuRuntime(version_dir, config, device=torch_device, dtype=compute, keep_dense=keep_dense,
                             backend=backend, sparse_factory=factory,
                             timer=gpu_timing.CudaTimer(torch_device, compute, factory, graphs=graphs,
                                                        quant_kernels=quant),
                             capture=gpu_graphs.cuda_capture() if graphs else None, quant_kernels=quant)
    runtime.describe().details["cusparselt"] = {
        "version": version, "problem": gpu_cusparselt.version_problem(version) if backend == "cusparselt" else None,
        "quant_kernels": sorted(quant)}
    return runtime
