"""bench/gpu_fp8.py's CPU-runnable parts: argument parsing, the tables and verdicts with injected results, and
the script itself as a smoke run (emulated kernels) in the lent GPU box's environment and in the full one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_fp8 import parse
from bench.gpu_fp8_tables import LayerResult, bytes_table, e2e_table, e2e_verdict, layer_table, layer_verdict
from tests.support.hidden_modules import GPU_BOX_ABSENT, python_command

ROOT = Path(__file__).resolve().parents[3]


def test_arguments() -> None:
    args = parse([])
    assert (args.parts, args.hidden, args.blocks, args.sequence, args.smoke) == ("f,g,h", 1024, 24, 128, False)
    with pytest.raises(SystemExit):
        parse(["--parts", "f,x"])


def square(tokens: int, fp8_dense: float, fp8_sparse: float) -> LayerResult:
    return LayerResult("square 8192", 8192, 8192, tokens,
                       us={"fp16 dense": 2000.0, "fp16 2:4": 1600.0, "fp16 2:4 direct": 1500.0,
                           "FP8 dense": fp8_dense, "FP8 2:4": fp8_sparse},
                       rel_err={"FP8 2:4": 0.02, "fp16 2:4": 1e-3})


def test_layer_table_and_verdict() -> None:
    met = [square(1024, 1000.0, 900.0), square(2048, 1000.0, 650.0), square(8192, 1000.0, 600.0)]
    text = layer_table(met)
    assert "1.33x" in text and "1.54x" in text  # fp16 direct vs dense; FP8 2:4 vs FP8 dense at 2048
    assert "0.0200" in text  # the worst relative error of the row
    assert layer_verdict(met).endswith("worst 1.54x, best 1.67x -> MET")  # 1024 tokens is below the bar
    missed = [square(2048, 1000.0, 800.0)]
    assert "NOT MET" in layer_verdict(missed)
    broken = LayerResult("square 8192", 8192, 8192, 4096, us={"fp16 dense": 1.0},
                         errors={"FP8 2:4": "failed: CUSPARSE_STATUS_NOT_SUPPORTED"})
    assert "FP8 2:4: failed: CUSPARSE_STATUS_NOT_SUPPORTED" in layer_table([broken])
    assert "NOT MEASURED" in layer_verdict([broken])


def test_bytes_table_ratios() -> None:
    text = bytes_table([("square 8192", 8192, 8192, 8192 * 8192 * 2, {"FP8 2:4": int(8192 * 8192 * 2 * 0.3125)})])
    assert "0.312x" in text and "<= 0.32x" in text


def test_e2e_table_and_verdict() -> None:
    batches = [1, 64, 256]
    times = {"fp16 dense": [1.0, 10.0, 40.0], "fp16 2:4": [1.2, 8.5, 33.0], "FP8 dense": [1.1, 6.0, 24.0],
             "FP8 2:4": [1.3, 4.6, 18.0], "auto": [1.0, 4.7, 18.2]}
    table = e2e_table(batches, times)
    assert table.splitlines()[0].split()[:2] == ["batch", "fp16"]
    assert "1.30x" in table  # FP8 2:4 vs FP8 dense at 64 (6.0 / 4.6)
    verdict = e2e_verdict(batches, times)
    assert "FP8 2:4 vs FP8 dense at batch >= 64: worst 1.30x (MET" in verdict
    assert "fp16 2:4 vs fp16 dense at batch >= 64: worst 1.18x (MET" in verdict
    assert "auto vs the faster dense at every batch: worst 1.00x (MET" in verdict
    slow = {**times, "auto": [1.2, 4.7, 18.2]}
    assert "auto vs the faster dense at every batch: worst 0.83x (NOT MET" in e2e_verdict(batches, slow)


def test_smoke_run_on_a_gpu_box_environment_skips_end_to_end_with_the_reason() -> None:
    code = ("import runpy, sys; sys.argv = ['bench/gpu_fp8.py', '--smoke']; "
            "runpy.run_path('bench/gpu_fp8.py', run_name='__main__')")
    done = subprocess.run(python_command(GPU_BOX_ABSENT, code), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(f) per layer" in done.stdout and "(g) GPU bytes" in done.stdout
    assert "(h) end to end: SKIPPED: tritonclient is not importable here" in done.stdout
    assert "SMOKE" in done.stdout


def test_smoke_run_end_to_end_with_the_runtime() -> None:
    done = subprocess.run([sys.executable, "bench/gpu_fp8.py", "--smoke", "--parts", "h"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "candidates (geo-mean vs fp16 dense)" in done.stdout  # auto's decision table
    assert "auto vs the faster dense at every batch" in done.stdout
