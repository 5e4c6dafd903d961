"""How the CPU forward shares the GIL: the benchmark MLP run in a thread beside a busy Python thread.

Why: in the server the compute thread runs the model while the event loop decodes and encodes requests. An
exported program (an FX graph, one Python call per aten op) gives the GIL up and takes it back at every op, and
each take-back waits for the busy thread to let go; a traced TorchScript module (server/runtime/cpu_trace.py) gives
it up once per forward. This prints, for each way of running the same weights, how many forwards completed in the
window with a busy Python thread beside them, and the median latency of a forward alone, side by side in one run.

    python bench/gil_forward.py [--seconds 2] [--rows 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_bench import VARIANTS, build_repository  # noqa: E402
from server.artifacts import build_module, load_program, load_weights  # noqa: E402
from server.runtime.binding import make_binding  # noqa: E402
from server.runtime.cpu_trace import trace  # noqa: E402

Forward = Callable[[torch.Tensor], object]


def forwards_beside_busy_python(forward: Forward, x: torch.Tensor, seconds: float) -> int:
    stop = time.monotonic() + seconds
    done = [0]

    def compute() -> None:
        with torch.inference_mode():
            while time.monotonic() < stop:
                forward(x)
                done[0] += 1

    worker = threading.Thread(target=compute)
    worker.start()
    spins = 0
    while time.monotonic() < stop:  # the event loop's stand-in: pure Python, never blocking
        spins += 1
    worker.join()
    return done[0]


def alone_us(forward: Forward, x: torch.Tensor, calls: int = 200) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(calls):
            start = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    with tempfile.TemporaryDirectory() as tmp:
        root = build_repository(Path(tmp), VARIANTS["batched"])
        config = text_format.Parse((root / "mlp" / "config.pbtxt").read_text(), mc.ModelConfig())
        program = load_program(root / "mlp" / "1" / "program.pt2")
        module = build_module(program, load_weights(root / "mlp" / "1" / "weights.safetensors"))
        traced, how = trace(module, make_binding(program, config), config)
        assert traced is not None, how
        ways: dict[str, Forward] = {"exported graph": module, "traced (torchscript)": traced}
        x = torch.randn(args.rows, 784)
        print(f"benchmark MLP, {args.rows} rows, 1 intra-op thread, {args.seconds:.0f} s beside a busy Python thread")
        print(f"{'forward':<22} {'forwards beside busy Python':>28} {'alone, median us':>18}")
        for name, forward in ways.items():
            print(f"{name:<22} {forwards_beside_busy_python(forward, x, args.seconds):>28} "
                  f"{alone_us(forward, x):>18.0f}")


if __name__ == "__main__":
    main()
