"""Soak: mixed traffic for a long time against a real server; RSS, open fds and threads must not grow.

Traffic: gRPC unary (mlp), HTTP binary (mlp_batched), HTTP JSON (mlp), gRPC streaming (mlp_batched), and a control
loop that unloads and reloads `mixed` (explicit model control) while a client keeps calling it. Every mlp answer
is compared with the real module's output. The control loop samples the server's RSS, fd count and thread count
right after each reload. Warm-up samples (the first `--warmup` seconds) are dropped. RSS growth is the last sample
against the first after warm-up; fd and thread growth compare the medians of the first and the last five samples,
because a reloaded model's compute thread starts with its first request and may or may not exist at a sample's
instant (a count that comes and goes is not growth).

    python bench/soak.py --duration 600        # exits 1 when RSS grows >= 5% or fds/threads grow
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402

from tests.support.models import build_test_repository  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def sample(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open fds, threads) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) / 1024
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir())), int(fields["Threads"])


def thread_names(pid: int) -> Counter[str]:
    """How many threads carry each kernel-visible name ("python" for Python's own; gRPC and torch name theirs)."""
    names: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[(task / "comm").read_text().strip()] += 1
        except OSError:  # ended between the listing and the read
            pass
    return names


def name_changes(first: list[Counter[str]], last: list[Counter[str]]) -> str:
    """Names whose median count moved between the first and the last samples, e.g. "python 6 -> 7"."""
    moved = []
    for name in sorted(set().union(*first, *last)):
        before = statistics.median_low(c[name] for c in first)
        after = statistics.median_low(c[name] for c in last)
        if before != after:
            moved.append(f"{name} {before} -> {after}")
    return ", ".join(moved) or "none"


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.errors: dict[str, list[str]] = {}

    def add(self, kind: str, error: str | None = None) -> None:
        with self.lock:
            if error is None:
                self.ok[kind] = self.ok.get(kind, 0) + 1
            else:
                self.errors.setdefault(kind, []).append(error[:200])


def run_traffic(server: ServerProcess, mlp: torch.nn.Module, batched: torch.nn.Module, stop: threading.Event,
                counts: Counts) -> list[threading.Thread]:
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    with torch.inference_mode():
        want = {"mlp": mlp(torch.from_numpy(x)).numpy(), "mlp_batched": batched(torch.from_numpy(x)).numpy()}

    def check(kind: str, model: str, out: np.ndarray) -> None:
        counts.add(kind, None if np.allclose(out, want[model], rtol=1e-5, atol=1e-6) else "wrong output")

    def grpc_unary() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        while not stop.is_set():
            t = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
            t.set_data_from_numpy(x)
            check("grpc unary", "mlp", client.infer("mlp", [t]).as_numpy("OUTPUT0"))

    def http_calls(binary: bool, model: str) -> None:
        client = httpclient.InferenceServerClient(server.http_url)
        while not stop.is_set():
            t = httpclient.InferInput("INPUT0", [2, 16], "FP32")
            t.set_data_from_numpy(x, binary_data=binary)
            check(f"http {'binary' if binary else 'json'}", model, client.infer(model, [t]).as_numpy("OUTPUT0"))

    def grpc_stream() -> None:
        while not stop.is_set():
            client = grpcclient.InferenceServerClient(server.grpc_url)
            done = threading.Semaphore(0)

            def callback(result, error, done: threading.Semaphore = done) -> None:  # type: ignore[no-untyped-def]
                if error is not None:
                    counts.add("grpc stream", str(error))
                else:
                    check("grpc stream", "mlp_batched", result.as_numpy("OUTPUT0"))
                done.release()

            client.start_stream(callback)
            t = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
            t.set_data_from_numpy(x)
            for _ in range(50):
                client.async_stream_infer("mlp_batched", [t])
            for _ in range(50):
                done.acquire(timeout=30)
            client.stop_stream()
            client.close()

    def mixed_calls() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        ones = np.ones((1, 3))
        while not stop.is_set():
            inputs = [grpcclient.InferInput(n, [1, 3], dt) for n, dt in
                      (("A", "FP16"), ("B", "INT32"), ("C", "BOOL"), ("D", "FP32"))]
            inputs[3] = grpcclient.InferInput("D", [1, 3], "BF16")
            inputs[0].set_data_from_numpy(ones.astype(np.float16))
            inputs[1].set_data_from_numpy(ones.astype(np.int32))
            inputs[2].set_data_from_numpy(ones.astype(bool))
            inputs[3]._raw_content = np.full((1, 3), 0x3F80, np.uint16).tobytes()  # bf16 1.0
            inputs[3]._input.ClearField("contents")
            try:
                out = client.infer("mixed", inputs).as_numpy("B1")
                counts.add("grpc mixed", None if out.tolist() == [[2, 2, 2]] else "wrong output")
            except Exception as exc:  # noqa: BLE001 - UNAVAILABLE while the control loop has it unloaded
                if "UNAVAILABLE" in str(exc) or "not ready" in str(exc) or "unload" in str(exc):
                    counts.add("grpc mixed (refused while unloaded)")
                else:
                    counts.add("grpc mixed", str(exc))
            time.sleep(0.01)

    def guard(target, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            target(*args)
        except Exception as exc:  # noqa: BLE001 - a dead client thread is itself a failure to report
            counts.add("client crashed", f"{type(exc).__name__}: {exc}")

    work = [(grpc_unary,), (http_calls, True, "mlp_batched"), (http_calls, False, "mlp"), (grpc_stream,),
            (mixed_calls,)]
    threads = [threading.Thread(target=guard, args=w, daemon=True) for w in work]
    for t in threads:
        t.start()
    return threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds dropped before measuring growth")
    parser.add_argument("--reload-every", type=float, default=5.0, help="seconds between unload/load of 'mixed'")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="twofour-soak-"))
    modules = build_test_repository(root)
    shutil.rmtree(root / "broken")
    server = ServerProcess(root, "--model-control-mode", "explicit", "--load-model", "mlp",
                           "--load-model", "mlp_batched", "--load-model", "mixed")
    stop, counts = threading.Event(), Counts()
    samples: list[tuple[float, float, int, int]] = []
    names: list[Counter[str]] = []
    start = time.monotonic()
    threads = run_traffic(server, modules["mlp"], modules["mlp_batched"], stop, counts)
    control = grpcclient.InferenceServerClient(server.grpc_url)
    reloads = 0
    try:
        while time.monotonic() - start < args.duration:
            time.sleep(args.reload_every)
            control.unload_model("mixed")
            time.sleep(0.2)
            control.load_model("mixed")
            reloads += 1
            samples.append((time.monotonic() - start, *sample(server.process.pid)))
            names.append(thread_names(server.process.pid))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        code = server.stop()
        shutil.rmtree(root, ignore_errors=True)
    kept = [i for i, s in enumerate(samples) if s[0] >= args.warmup] or list(range(len(samples)))
    measured, measured_names = [samples[i] for i in kept], [names[i] for i in kept]
    first, last = measured[0], measured[-1]
    peak = max(s[1] for s in measured)
    growth = (last[1] - first[1]) / first[1] * 100
    print(f"duration {args.duration:.0f}s, warm-up {args.warmup:.0f}s, {reloads} unload/load cycles of 'mixed', "
          f"server exit code {code}\n")
    print("| metric | after warm-up | end | change |\n|---|---|---|---|")
    print(f"| RSS MiB | {first[1]:.1f} | {last[1]:.1f} | {growth:+.2f}% (peak {peak:.1f}) |")
    # fds and threads: the median of the first and of the last five samples, so a thread that is starting or
    # ending at the instant of one sample (a reloaded model's compute thread) is not counted as growth
    fds = (statistics.median_low(s[2] for s in measured[:5]), statistics.median_low(s[2] for s in measured[-5:]))
    threads = (statistics.median_low(s[3] for s in measured[:5]), statistics.median_low(s[3] for s in measured[-5:]))
    print(f"| open fds | {fds[0]} | {fds[1]} | {fds[1] - fds[0]:+d} (max {max(s[2] for s in measured)}) |")
    print(f"| threads | {threads[0]} | {threads[1]} | {threads[1] - threads[0]:+d} "
          f"(max {max(s[3] for s in measured)}) |")
    print(f"\nthreads by name, median of the first and last five samples: "
          f"{name_changes(measured_names[:5], measured_names[-5:])}")
    print("\n| traffic | ok | errors |\n|---|---|---|")
    for kind in sorted(set(counts.ok) | set(counts.errors)):
        print(f"| {kind} | {counts.ok.get(kind, 0)} | {len(counts.errors.get(kind, []))} |")
    for kind, errors in counts.errors.items():
        print(f"\nfirst {kind} error: {errors[0]}")
    passed = growth < 5 and fds[1] <= fds[0] and threads[1] <= threads[0] and not counts.errors and code == 0
    print(f"\nRESULT: {'PASS' if passed else 'FAIL'} (RSS growth < 5%, no fd/thread growth, no errors, exit 0)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
