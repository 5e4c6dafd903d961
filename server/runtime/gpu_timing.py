"""The CUDA side of the per-layer choice: the 2:4 kernel factory and a CUDA-event timer. Needs a GPU.

Timing uses synthetic weights of each layer's shape (a kernel's speed does not depend on the values, only on the
shape, dtype and 2:4 pattern), so the real weights are converted to the sparse layout only for layers that win.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch
import torch.nn.functional as F

from server.runtime.gpu_choice import FP8_DENSE, FP8_SPARSE, INT8_SPARSE, QUANT_SCHEME, candidate_kernels
from server.runtime.gpu_cusparselt import DirectCusparseltKernel
from server.runtime.gpu_decision import DENSE, LayerShape
from server.runtime.gpu_layers import QuantFactory, SparseFactory, SparseKernel
from server.runtime.gpu_quant import Fp8DenseKernel, QuantSparseKernel
from server.sparsity import compress
from server.sparsity.quantize import QuantizedLayer, quantize


def available_backend(capability: tuple[int, int] | None = None) -> str:
    """cuSPARSELt when this torch build ships it (faster, more shapes), PyTorch's CUTLASS kernels otherwise --
    those run on compute capability 8.x only (on an H200, sm_90, they raise "Supported only on GPUs with compute
    capability 8.x"), so a Hopper GPU without cuSPARSELt has no 2:4 backend ("none": every layer stays dense)."""
    cusparselt = getattr(torch.backends, "cusparselt", None)
    if cusparselt is not None and cusparselt.is_available():
        return "cusparselt"
    major = (capability or torch.cuda.get_device_capability())[0]
    return "cutlass" if major == 8 else "none"


def cutlass_runs_here() -> bool:
    """PyTorch's CUTLASS 2:4 kernels are built for sm_8x alone."""
    return torch.cuda.get_device_capability()[0] == 8


def _subclass(backend: str) -> type[torch.sparse.SparseSemiStructuredTensor]:
    if backend == "cusparselt":
        return torch.sparse.SparseSemiStructuredTensorCUSPARSELT
    if backend == "cutlass":
        return torch.sparse.SparseSemiStructuredTensorCUTLASS
    raise ValueError(f"unknown 2:4 backend {backend!r}")


class SemiStructuredKernel:
    """`F.linear` on a weight converted by `to_sparse_semi_structured`'s backend class, chosen explicitly (no
    global `_FORCE_CUTLASS` flag). The packed layout exists only in GPU memory; it is never written to disk."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, backend: str) -> None:
        if weight.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"2:4 kernels run in float16/bfloat16 only, got {weight.dtype}")
        self.weight = _subclass(backend).from_dense(weight.contiguous())
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def semi_structured_factory(backend: str) -> SparseFactory:
    """fp16/bf16 2:4: on cuSPARSELt, `_cslt_sparse_mm` called directly (searched alg id per bucket, row-major
    result, bias in the epilogue: gpu_cusparselt.py); on CUTLASS, torch's subclass."""
    if backend == "cusparselt":
        return lambda weight, bias: DirectCusparseltKernel(weight, bias)
    return lambda weight, bias: SemiStructuredKernel(weight, bias, backend)


def quant_factories(capability: tuple[int, int], backend: str, dtype: torch.dtype,
                    device: torch.device) -> dict[str, QuantFactory]:
    """The FP8/INT8 kernels this GPU runs (gpu_choice.candidate_kernels), as factories over stored layers."""
    names = set(candidate_kernels("fp8", capability, backend) + candidate_kernels("int8", capability, backend))
    out: dict[str, QuantFactory] = {}
    if FP8_DENSE in names:
        out[FP8_DENSE] = lambda layer, bias: Fp8DenseKernel(layer, bias, dtype, device)
    for name in (FP8_SPARSE, INT8_SPARSE):
        if name in names:
            out[name] = lambda layer, bias: QuantSparseKernel(layer, bias, dtype, device)
    return out


def synthetic_layer(dense: torch.Tensor, scheme: str) -> QuantizedLayer:
    """A stored layer made from a random 2:4 weight: what the quantized kernels are timed on."""
    values, mask = compress(dense.detach().float().cpu())
    codes, scale = quantize(values, scheme)
    return QuantizedLayer(scheme, codes, mask, scale)


def random_2_4(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A random weight with exactly 2 nonzeros in every group of 4 (what the kernels are timed on)."""
    weight = torch.randn(rows, cols, dtype=dtype, device=device)
    keep = torch.rand(rows, cols // 4, 4, device=device).argsort(dim=-1)[..., :2]
    mask = torch.zeros(rows, cols // 4, 4, dtype=torch.bool, device=device).scatter_(-1, keep, True)
    return weight * mask.reshape(rows, cols)


def time_cuda(call: Callable[[], object], warmup: int = 3, repeats: int = 5, inner: int = 10) -> float:
    """Median seconds per call of `call()` over `repeats` CUDA-event windows of `inner` calls each."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            call()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1000.0 / inner)
    return statistics.median(samples)


def time_cuda_graph(call: Callable[[], object], repeats: int = 5, inner: int = 10) -> float:
    """Median seconds per call with `inner` calls replayed from one CUDA graph: the GPU time of the kernels
    without the host's launch and plan-building work, which is what a call costs in a served graph
    (gpu_graphs.py). Falls back to `time_cuda` (eager) when the calls cannot be captured."""
    current = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(inner):
                call()
    except RuntimeError:
        return time_cuda(call, repeats=repeats, inner=inner)
    graph.replay()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1000.0 / inner)
    del graph
    return statistics.median(samples)


class CudaTimer:
    """Timer for gpu_decision: dense `F.linear` vs the 2:4 kernel on one layer shape at one row count, timed the
    way the model will run: replayed from a CUDA graph when the runtime serves through graphs, eagerly if not."""

    def __init__(self, device: torch.device, dtype: torch.dtype, factory: SparseFactory, graphs: bool = True,
                 quant_kernels: dict[str, QuantFactory] | None = None) -> None:
        self.device, self.dtype, self.factory, self.graphs = device, dtype, factory, graphs
        self.quant_kernels = dict(quant_kernels or {})
        self._weights: dict[LayerShape, tuple[torch.Tensor, torch.Tensor]] = {}
        self._kernels: dict[tuple[LayerShape, str], SparseKernel] = {}

    def _weight(self, shape: LayerShape) -> tuple[torch.Tensor, torch.Tensor]:
        if shape not in self._weights:
            dense = random_2_4(shape.out_features, shape.in_features, self.dtype, self.device)
            self._weights[shape] = (dense, torch.zeros(shape.out_features, dtype=self.dtype, device=self.device))
        return self._weights[shape]

    def _kernel(self, shape: LayerShape, kernel: str) -> SparseKernel:
        dense, bias = self._weight(shape)
        if (shape, kernel) not in self._kernels:
            if kernel in self.quant_kernels:
                layer = synthetic_layer(dense, QUANT_SCHEME[kernel])
                self._kernels[(shape, kernel)] = self.quant_kernels[kernel](layer, bias)
            else:
                self._kernels[(shape, kernel)] = self.factory(dense, bias)
        return self._kernels[(shape, kernel)]

    def __call__(self, shape: LayerShape, kernel: str, rows: int) -> float:
        x = torch.randn(rows, shape.in_features, dtype=self.dtype, device=self.device)
        clock = time_cuda_graph if self.graphs else time_cuda
        with torch.inference_mode():
            if kernel == DENSE:
                dense, bias = self._weight(shape)
                return clock(lambda: F.linear(x, dense, bias))
            call = self._kernel(shape, kernel)
            prepare = getattr(call, "prepare", None)
            if prepare is not None:  # time with the searched algorithm, as the runtime will run it
                prepare(rows, x)
            return clock(lambda: call(x))

    def clear(self) -> None:
        """Free the synthetic weights once the decisions are made."""
        self._weights.clear()
        self._kernels.clear()
        torch.cuda.empty_cache()
