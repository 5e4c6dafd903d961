"""Benchmark the real `twofour serve` on the reference MLP, dynamic batching off vs on, gRPC and HTTP.

Builds the benchmark repository (MLP 784-1024-1024-10 fp32, weights from torch.manual_seed(0) exactly as
/work/shared/triton-reference/model.py builds them; model `mlp`, INPUT0 FP32 [-1,784] -> OUTPUT0 FP32 [-1,10])
in a temp dir once per variant, starts the server as a subprocess (1 intra-op thread: client and server share the
machine's cores), runs bench/load.py's closed loop over both protocols, stops it, and prints one table.

    python bench/serve_bench.py --concurrency 1,32 --duration 10
    python bench/serve_bench.py --keep-running batched   # just serve that variant (for py-spy), Ctrl-C to stop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import HEADER, Result, sweep  # noqa: E402
from server.artifacts import save_program, save_weights  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

REFERENCE = Path("/work/shared/triton-reference/reference.npz")

VARIANTS = {
    "direct": "instance_group [{ count: 1 kind: KIND_CPU }]",
    "batched": "instance_group [{ count: 1 kind: KIND_CPU }]\ndynamic_batching { max_queue_delay_microseconds: 0 }",
    "batched_delay500": "instance_group [{ count: 1 kind: KIND_CPU }]\n"
                        "dynamic_batching { max_queue_delay_microseconds: 500 }",
    "batched_2inst": "instance_group [{ count: 2 kind: KIND_CPU }]\n"
                     "dynamic_batching { max_queue_delay_microseconds: 0 }",
}

CONFIG = """
name: "mlp"
backend: "twofour"
max_batch_size: 64
input [{{ name: "INPUT0" data_type: TYPE_FP32 dims: [784] }}]
output [{{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [10] }}]
{batching}
"""


def build_model() -> torch.nn.Module:
    """Identical to the Triton reference's build_model(): same layers, same seed, same init order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    return model.eval()


def build_repository(root: Path, batching: str) -> Path:
    model = build_model()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 784),), dynamic_shapes=({0: batch},))
    version = root / "mlp" / "1"
    version.mkdir(parents=True, exist_ok=True)
    save_program(program, version / "program.pt2")
    save_weights(dict(model.state_dict()), set(), version / "weights.safetensors")  # dense: the reference weights
    (root / "mlp" / "config.pbtxt").write_text(CONFIG.format(batching=batching))
    return root


def reference() -> tuple[np.ndarray, np.ndarray]:
    if REFERENCE.exists():
        data = np.load(REFERENCE)
        return data["x"], data["y"]
    x = np.random.default_rng(123).standard_normal((1, 784), dtype=np.float32)
    with torch.inference_mode():
        return x, build_model()(torch.from_numpy(x)).numpy()


def run_variant(name: str, levels: list[int], warmup: float, duration: float, protocols: list[str],
                flags: tuple[str, ...] = ()) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix=f"twofour-bench-{name}-") as tmp:
        server = ServerProcess(build_repository(Path(tmp), VARIANTS[name]), *flags, timeout=120)
        try:
            urls = {"grpc": server.grpc_url, "http": server.http_url}
            results = asyncio.run(sweep(name, {p: urls[p] for p in protocols}, "mlp", levels, warmup, duration,
                                        expected=reference(), server_pid=server.process.pid))
            with urllib.request.urlopen(f"http://{server.http_url}/v2/models/mlp/stats", timeout=10) as r:
                stats = json.load(r)["model_stats"][0]
            print(f"  {name}: mean executed batch {int(stats['inference_count']) / int(stats['execution_count']):.2f} "
                  f"rows over the whole run", flush=True)
            return results
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--variants", default="direct,batched")
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument("--keep-running", choices=sorted(VARIANTS), help="serve one variant until interrupted")
    parser.add_argument("--grpc-frontend", choices=["auto", "native", "python", "inline"], default=None,
                        help="the server's --grpc-frontend (default: the server's default)")
    parser.add_argument("--server-flag", action="append", default=[], metavar="FLAG",
                        help="one more `twofour serve` argument, repeatable (e.g. --server-flag=--log-level=debug)")
    args = parser.parse_args()
    flags = (("--grpc-frontend", args.grpc_frontend) if args.grpc_frontend else ()) + tuple(args.server_flag)
    if args.keep_running:
        # `kill <pid>` must stop the server too: without this, SIGTERM ends this process before the `finally`
        # below and leaves the server running, stealing CPU from every later measurement on the machine.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(build_repository(Path(tmp), VARIANTS[args.keep_running]), *flags, timeout=120)
            print(f"pid {server.process.pid} grpc {server.grpc_url} http {server.http_url}", flush=True)
            try:
                while server.alive():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            finally:
                server.stop()
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    print(HEADER, flush=True)
    results = {v: run_variant(v, levels, args.warmup, args.duration, args.protocols.split(","), flags)
               for v in args.variants.split(",")}
    if {"direct", "batched"} <= results.keys():
        print("\nbatched / direct (throughput ratio, p50 difference):")
        for d, b in zip(results["direct"], results["batched"], strict=True):
            print(f"  {d.protocol:<5} conc {d.concurrency:>3}: x{b.infer_per_s / d.infer_per_s:.2f} infer/s, "
                  f"p50 {b.p50_ms - d.p50_ms:+.3f} ms")


if __name__ == "__main__":
    main()
