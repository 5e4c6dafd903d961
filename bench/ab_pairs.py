"""A/B in alternating pairs: two twofour servers on the reference MLP, measured in turns, one ratio per pair.

Why: this project's machines are shared and drift by ±15% within minutes, so only measurements taken side by side
compare (bench/RESULTS.md). Each server is `bench/serve_bench.py --keep-running` of a source tree, so B can be
another checkout (a git worktree of an earlier commit) as well as other flags. The order alternates (A,B then
B,A) so drift within a pair cancels over pairs. Usage:

    python bench/ab_pairs.py --b-flag=--grpc-frontend=inline            # the default vs inline gRPC
    git worktree add /tmp/before HEAD~1
    python bench/ab_pairs.py --a-tree /tmp/before --a-label before --b-label after --pairs 8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import Result, measure  # noqa: E402


def start(tree: Path, variant: str, flags: list[str]) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    """One server from `tree`; returns the launcher, its URLs and the server's pid (for its CPU)."""
    command = [sys.executable, str(tree / "bench" / "serve_bench.py"), "--keep-running", variant,
               *(f"--server-flag={flag}" for flag in flags)]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tree)
    assert launcher.stdout is not None
    line = launcher.stdout.readline().split()  # "pid N grpc HOST:PORT http HOST:PORT"
    if len(line) < 6:
        launcher.terminate()
        raise SystemExit(f"{tree}: the server did not start (said {' '.join(line)!r})")
    return launcher, {"grpc": line[3], "http": line[5]}, int(line[1])


def one(url: str, pid: int, protocol: str, concurrency: int, duration: float) -> Result:
    x = np.random.default_rng(1).standard_normal((1, 784), dtype=np.float32)
    return asyncio.run(measure(protocol, url, "mlp", concurrency, x, 1.0, duration, server_pid=pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for side in ("a", "b"):
        parser.add_argument(f"--{side}-tree", type=Path, default=ROOT, help="source tree of this server")
        parser.add_argument(f"--{side}-flag", action="append", default=[], help="`twofour serve` argument")
        parser.add_argument(f"--{side}-label", default=side.upper())
        parser.add_argument(f"--{side}-variant", default="", help="this side's VARIANTS key (default: --variant)")
    parser.add_argument("--variant", default="batched", help="a bench/serve_bench.py VARIANTS key")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    servers = [start(args.a_tree, args.a_variant or args.variant, args.a_flag),
               start(args.b_tree, args.b_variant or args.variant, args.b_flag)]
    labels = [args.a_label, args.b_label]
    try:
        print(f"{args.protocol} c={args.concurrency}, {args.duration:.0f} s each, {args.pairs} pairs")
        print(f"{'pair':>4} {labels[0] + ' infer/s':>16} {labels[1] + ' infer/s':>16} {'ratio':>7} "
              f"{labels[0] + ' p50':>12} {labels[1] + ' p50':>12} {labels[0] + ' p99':>12} {labels[1] + ' p99':>12}",
              flush=True)
        ratios, p50_moves = [], []
        for pair in range(args.pairs):
            order = (0, 1) if pair % 2 == 0 else (1, 0)
            got: dict[int, Result] = {}
            for side in order:
                _, urls, pid = servers[side]
                got[side] = one(urls[args.protocol], pid, args.protocol, args.concurrency, args.duration)
            ratio = got[1].infer_per_s / got[0].infer_per_s if got[0].infer_per_s else float("nan")
            ratios.append(ratio)
            p50_moves.append(got[1].p50_ms - got[0].p50_ms)
            print(f"{pair + 1:>4} {got[0].infer_per_s:>16.0f} {got[1].infer_per_s:>16.0f} {ratio:>6.2f}x "
                  f"{got[0].p50_ms:>12.2f} {got[1].p50_ms:>12.2f} {got[0].p99_ms:>12.2f} {got[1].p99_ms:>12.2f}",
                  flush=True)
        wins = sum(r > 1 for r in ratios)
        print(f"{labels[1]} / {labels[0]}: median x{statistics.median(ratios):.2f}, ahead in {wins} of "
              f"{len(ratios)} pairs; p50 moved by {statistics.median(p50_moves):+.3f} ms (median)")
    finally:
        for launcher, _, _ in servers:
            launcher.terminate()  # serve_bench stops its server on SIGTERM
            launcher.wait(timeout=60)


if __name__ == "__main__":
    main()
