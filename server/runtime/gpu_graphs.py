"""CUDA graphs for the GPU runtime: one captured forward per batch bucket, replayed for every batch of that size.

Why: at serving batch sizes a layer's GEMM takes microseconds on a Hopper GPU, while launching it from Python takes
tens, and torch's cuSPARSELt wrapper builds a new matmul plan on every call (~0.45 ms per layer measured on an H200,
bench/RESULTS.md). Launched eagerly, a 2:4 layer is therefore *slower* than dense at every batch size, whatever the
Tensor Cores do. Replaying a captured graph launches the whole forward at once and skips the host-side plan
building, so what a batch costs is GPU time, where 2:4 saves.

A batch of n rows replays the smallest captured bucket >= n: its rows are copied into the bucket's static input,
the rest is padding whose outputs are dropped (rows are independent, which dynamic batching already assumes). A
batch whose non-batch shapes or dtypes differ from the captured ones (another sequence length, an optional input
present) runs eagerly. The capture itself is injected (`Capture`), so bucket choice, padding, slicing and
fallback are unit-tested on CPU with an eager stand-in.
"""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

Forward = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
Signature = tuple[tuple[str, tuple[int, ...], torch.dtype], ...]


class Capture(Protocol):
    def __call__(self, forward: Forward, inputs: dict[str, torch.Tensor]) -> tuple[Callable[[], None],
                                                                                     dict[str, torch.Tensor]]:
        """Record `forward` on the static `inputs`; return (replay, the static outputs replay refills)."""
        ...


def signature(inputs: dict[str, torch.Tensor]) -> Signature:
    """What a captured graph fixes besides the batch dimension: names, per-row shapes and dtypes."""
    return tuple(sorted((name, tuple(t.shape[1:]), t.dtype) for name, t in inputs.items()))


def pick_bucket(rows: int, buckets: list[int]) -> int | None:
    """The smallest bucket that holds `rows` rows; None when none does (the batch then runs eagerly)."""
    index = bisect.bisect_left(buckets, rows)
    return buckets[index] if index < len(buckets) else None


@dataclass
class _Graph:
    replay: Callable[[], None]
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]


class GraphBuckets:
    """Captured forwards by batch bucket. `run` is thread-safe: replays share static buffers (and one memory
    pool on CUDA), so one batch at a time goes through them; instance_group executors serialise here."""

    def __init__(self, forward: Forward, examples: dict[int, dict[str, torch.Tensor]], capture: Capture) -> None:
        """`examples`: bucket size -> static inputs of that many rows, already on the device in the compute dtype.
        Largest first, so the smaller buckets reuse the memory the largest one's capture reserved."""
        self._forward, self._capture = forward, capture
        self._graphs: dict[int, _Graph] = {}
        self._signature: Signature | None = None
        for bucket in sorted(examples, reverse=True):
            inputs = examples[bucket]
            if self._signature is None:
                self._signature = signature(inputs)
            elif signature(inputs) != self._signature:
                raise ValueError(f"bucket {bucket}'s example inputs differ from the others' per-row shapes")
            replay, outputs = capture(forward, inputs)
            self._graphs[bucket] = _Graph(replay, inputs, outputs)
        self.buckets = sorted(self._graphs)
        self._lock = threading.Lock()

    def recapture(self, bucket: int) -> None:
        """Record `bucket` again, after the model's kernel choice for it changed (load time only)."""
        with self._lock:
            inputs = self._graphs.pop(bucket).inputs  # the old graph's memory returns to the pool first
            replay, outputs = self._capture(self._forward, inputs)
            self._graphs[bucket] = _Graph(replay, inputs, outputs)

    def replay_seconds(self, bucket: int, synchronize: Callable[[], None], repeats: int = 15) -> float:
        """Median wall seconds of one replay of `bucket` (host launch plus GPU time, synchronised each time)."""
        with self._lock:
            graph = self._graphs[bucket]
            graph.replay()
            synchronize()
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                graph.replay()
                synchronize()
                samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    def run(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Outputs of `batch` (fresh tensors on the device), or None when no captured graph fits it."""
        if not batch or signature(batch) != self._signature:
            return None
        rows = int(next(iter(batch.values())).shape[0])
        if any(int(t.shape[0]) != rows for t in batch.values()):
            return None
        bucket = pick_bucket(rows, self.buckets)
        if bucket is None:
            return None
        graph = self._graphs[bucket]
        with self._lock:
            for name, tensor in batch.items():
                graph.inputs[name][:rows].copy_(tensor)
            graph.replay()
            return {name: out[:rows].clone() for name, out in graph.outputs.items()}


def cuda_capture() -> Capture:
    """The real capture: warm up on a side stream (lazy initialisation, cuBLAS workspaces and cuSPARSELt plans
    must happen outside the graph), then record one forward into a CUDA graph. All of one model's graphs share a
    memory pool, which is safe because `GraphBuckets.run` replays one at a time and keeps every output alive."""
    shared = torch.cuda.graph_pool_handle()

    def capture(forward: Forward, inputs: dict[str, torch.Tensor]) -> tuple[Callable[[], None],
                                                                             dict[str, torch.Tensor]]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                forward(dict(inputs))
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=shared):
            outputs = forward(dict(inputs))
        return graph.replay, outputs

    return capture
