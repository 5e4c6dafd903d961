"""CUDA-graph buckets (server/runtime/gpu_graphs.py) on CPU: bucket choice, padding, slicing, fallback to eager,
and the runtime serving through them. The capture is the one injected piece: an eager stand-in that records the
forward once and re-runs it on the same static buffers at replay, which is what a CUDA graph does on a GPU."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.runtime.gpu import GpuRuntime
from server.runtime.gpu_bucket_check import ModelTimer
from server.runtime.gpu_decision import DENSE, DISPATCH, SPARSE, LayerShape, Timer
from server.runtime.gpu_graphs import Forward, GraphBuckets, pick_bucket
from server.runtime.gpu_rules import cuda_graphs_problem
from tests.support.models import write_model
from tests.unit.runtime.test_gpu_runtime import SPARSE_NAMES, Encoder, StandInKernel, clock, relative_error


class StandInCapture:
    """Records which buckets were captured (and in which order) and counts replays."""

    def __init__(self) -> None:
        self.captured: list[int] = []
        self.replays = 0

    def __call__(self, forward: Forward, inputs: dict[str, torch.Tensor]) -> tuple[Callable[[], None],
                                                                                     dict[str, torch.Tensor]]:
        self.captured.append(int(next(iter(inputs.values())).shape[0]))
        outputs = {n: t.clone() for n, t in forward(dict(inputs)).items()}

        def replay() -> None:
            self.replays += 1
            for name, tensor in forward(dict(inputs)).items():
                outputs[name].copy_(tensor)

        return replay, outputs


def doubled(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"Y": inputs["X"] * 2 + 1}


def buckets(capture: StandInCapture, sizes: tuple[int, ...] = (1, 2, 4, 8), width: int = 3) -> GraphBuckets:
    return GraphBuckets(doubled, {b: {"X": torch.zeros(b, width)} for b in sizes}, capture)


def test_pick_bucket_is_the_smallest_that_holds_the_rows() -> None:
    assert [pick_bucket(n, [1, 2, 4, 8]) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, None]


def test_largest_bucket_is_captured_first_so_smaller_ones_reuse_its_memory() -> None:
    capture = StandInCapture()
    graphs = buckets(capture, sizes=(2, 8, 1, 4))
    assert capture.captured == [8, 4, 2, 1] and graphs.buckets == [1, 2, 4, 8]


def test_a_batch_is_padded_into_its_bucket_and_only_its_rows_come_back() -> None:
    capture = StandInCapture()
    graphs = buckets(capture)
    first = torch.arange(9, dtype=torch.float32).reshape(3, 3)
    out = graphs.run({"X": first})
    assert out is not None and capture.replays == 1
    assert torch.equal(out["Y"], first * 2 + 1)  # 3 rows back from the 4-row bucket
    second = -torch.ones(2, 3)
    again = graphs.run({"X": second})
    assert again is not None and torch.equal(again["Y"], second * 2 + 1)
    assert torch.equal(out["Y"], first * 2 + 1), "a result must not be overwritten by the next replay"


@pytest.mark.parametrize("batch", [
    {"X": torch.zeros(2, 4)},  # another per-row shape (e.g. a different sequence length)
    {"X": torch.zeros(2, 3, dtype=torch.float64)},  # another dtype
    {"X": torch.zeros(2, 3), "Z": torch.zeros(2, 3)},  # an optional input present
    {"X": torch.zeros(9, 3)},  # more rows than the largest bucket
    {},
])
def test_batches_no_graph_fits_run_eagerly(batch: dict[str, torch.Tensor]) -> None:
    capture = StandInCapture()
    assert buckets(capture).run(batch) is None and capture.replays == 0


def test_buckets_must_share_per_row_shapes() -> None:
    with pytest.raises(ValueError, match="per-row shapes"):
        GraphBuckets(doubled, {1: {"X": torch.zeros(1, 3)}, 2: {"X": torch.zeros(2, 4)}}, StandInCapture())


def test_concurrent_batches_each_get_their_own_rows() -> None:
    graphs = buckets(StandInCapture())
    wrong: list[int] = []

    def worker(value: int) -> None:
        for _ in range(200):
            x = torch.full((3, 3), float(value))
            out = graphs.run({"X": x})
            if out is None or not torch.equal(out["Y"], x * 2 + 1):
                wrong.append(value)

    threads = [threading.Thread(target=worker, args=(v,)) for v in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_which_models_are_captured() -> None:
    assert cuda_graphs_problem(config("max_batch_size: 8")) is None
    assert "no batch dimension" in str(cuda_graphs_problem(config("max_batch_size: 0")))
    off = 'max_batch_size: 8 parameters { key: "cuda_graphs" value { string_value: "false" } }'
    assert "'cuda_graphs' is 'false'" in str(cuda_graphs_problem(config(off)))
    with pytest.raises(ValueError, match="true or false"):
        cuda_graphs_problem(config('max_batch_size: 8 parameters { key: "cuda_graphs" value { string_value: "x" } }'))


def runtime(tmp_path: Path, capture: Callable[..., object] | None, model_timer: ModelTimer | None = None,
            layer_timer: Timer = clock) -> tuple[GpuRuntime, Encoder]:
    model = Encoder().eval()
    write_model(tmp_path, "enc", model, (torch.randn(2, 64),), """
name: "enc"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [64] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [4] }]
""", sparse=SPARSE_NAMES)
    cfg = config((tmp_path / "enc" / "config.pbtxt").read_text())
    return GpuRuntime(tmp_path / "enc" / "1", cfg, device=torch.device("cpu"), dtype=torch.float16, keep_dense=True,
                      backend="cutlass", sparse_factory=StandInKernel, timer=layer_timer,
                      capture=capture, model_timer=model_timer), model  # type: ignore[arg-type]


def test_runtime_serves_through_the_captured_buckets(tmp_path: Path) -> None:
    capture = StandInCapture()
    served, model = runtime(tmp_path, capture)
    assert served.describe().details["cuda_graphs"] == {"enabled": True, "buckets": [1, 2, 4, 8]}
    before = capture.replays
    for rows in (1, 3, 8):
        x = torch.randn(rows, 64)
        got = served.infer({"X": x})["Y"]
        assert got.shape == (rows, 4) and got.dtype == torch.float32
        assert relative_error(got, model(x).detach()) <= 1e-2
    assert capture.replays - before == 3
    too_many = served.infer({"X": torch.randn(9, 64)})["Y"]  # beyond every bucket: eager, still answered
    assert too_many.shape == (9, 4) and capture.replays - before == 3


def test_a_failed_capture_serves_eagerly_and_says_why(tmp_path: Path) -> None:
    def refuses(forward: Forward, inputs: dict[str, torch.Tensor]) -> None:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\ndetail")

    served, model = runtime(tmp_path, refuses)
    graphs = served.describe().details["cuda_graphs"]
    assert graphs["enabled"] is False and "operation not permitted when stream is capturing" in graphs["reason"]
    x = torch.randn(3, 64)
    assert relative_error(served.infer({"X": x})["Y"], model(x).detach()) <= 1e-2


def test_without_a_capture_the_runtime_is_eager(tmp_path: Path) -> None:
    served, _ = runtime(tmp_path, None)
    assert served.describe().details["cuda_graphs"] == {"enabled": False, "reason": "not requested"}


def test_whole_model_check_turns_a_losing_bucket_dense(tmp_path: Path) -> None:
    # per layer, 2:4 wins from 4 rows up (clock); as a whole graph it wins at batch 4 and loses at batch 8
    timed: list[tuple[int, frozenset[str]]] = []

    def model_timer(bucket: int, layers: frozenset[str]) -> float:
        timed.append((bucket, layers))
        return 1.0 if not layers else (0.5 if bucket == 4 else 2.0)

    served, model = runtime(tmp_path, StandInCapture(), model_timer)
    details = served.describe().details
    assert details["bucket_check"] == [
        {"batch": 4, "sparse_layers": 2, "sparse_ms": 500.0, "dense_ms": 1000.0, "kernel": SPARSE},
        {"batch": 8, "sparse_layers": 2, "sparse_ms": 2000.0, "dense_ms": 1000.0, "kernel": DENSE}]
    assert timed == [(4, frozenset({"up.weight", "down.weight"})), (4, frozenset()),
                     (8, frozenset({"up.weight", "down.weight"})), (8, frozenset())]
    up = next(layer for layer in details["layers"] if layer["layer"] == "up.weight")
    assert up["kernel"] == DISPATCH and "whole-model check: the 2:4 graph lost at batch 8" in up["reason"]
    assert [(b["batch"], b["kernel"]) for b in up["buckets"]] == [(1, DENSE), (2, DENSE), (4, SPARSE), (8, DENSE)]
    for rows, sparse_calls in ((4, 2), (8, 0), (3, 2)):  # 3 rows replay the 4-row graph
        StandInKernel.calls = 0
        x = torch.randn(rows, 64)
        assert relative_error(served.infer({"X": x})["Y"], model(x).detach()) <= 1e-2
        assert StandInKernel.calls == sparse_calls, rows


def test_layers_sparse_at_every_bucket_after_the_check_drop_their_dense_weight(tmp_path: Path) -> None:
    def sparse_always(shape: LayerShape, kernel: str, rows: int) -> float:
        return 1.0 if kernel == DENSE else 0.5

    served, _ = runtime(tmp_path, StandInCapture(), lambda bucket, layers: 0.5 if layers else 1.0, sparse_always)
    details = served.describe().details
    assert [r["kernel"] for r in details["bucket_check"]] == [SPARSE] * 4
    assert served._switches["up.weight"].weight is None  # the check kept both weights; release came after
    assert served._switches["up.weight"].sparse is not None
