"""Run the built image as a user would and check what it serves (the second half of `make image-check`).

It starts the image with its own entry point, command, environment, working directory and user (only ports are
set, as `TWOFOUR_*_PORT` variables, so that it cannot collide with anything else on the machine), then checks:
readiness on /v2/health/ready, the image's own HEALTHCHECK command, one inference on the bundled mnist_mlp over
HTTP and over gRPC with the real tritonclient (the answers must equal this checkout's CPU runtime on the same
files), that every process of the container runs as a non-root user, and that SIGTERM drains and exits 0.
Finally it prints the image's size. Why the run flags are what they are: see RUN_FLAGS and docs/deploy.md.

Usage: python deploy/image_check.py IMAGE      (from the repository root, as root, with podman and runc)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.repository import read_config  # noqa: E402
from server.runtime.cpu import CpuRuntime  # noqa: E402

MODEL = "mnist_mlp"
READY_TIMEOUT_S = 180.0  # the image's HEALTHCHECK allows a 120 s start period; loading here takes ~10 s
DRAIN_TIMEOUT_S = 60.0  # above the server's default exit timeout (30 s)

# Why these flags (this sandbox refuses what podman does by default; docs/deploy.md, "Building it here"):
# - crun (podman's default runtime here) fails twice: setrlimit(RLIMIT_NOFILE / RLIMIT_NPROC) with podman's
#   default limits is refused (EPERM), and once past that it refuses the host's hybrid cgroup v1 + v2 layout
#   even with --cgroups=disabled. runc accepts the layout.
# - runc too refuses raising the limits to podman's defaults (1048576 open files), so explicit ones are given,
#   low enough for the sandbox to grant and ample for the server (its front and worker threads).
# - --network host: no bridge, no iptables needed; the server's ports are set to free ones instead.
# - --health-interval disable: no systemd here to run the timer; the check runs the HEALTHCHECK once itself.
RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096",
             "--network", "host", "--health-interval", "disable"]


def podman(*args: str, check: bool = True, timeout: float = 120.0) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"image-check: podman {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(container: str, http_port: int) -> float:
    """Seconds until /v2/health/ready answered 200; fails early if the container exits instead."""
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        if podman("inspect", "--format", "{{.State.Running}}", container) != "true":
            raise SystemExit(f"image-check: the container exited before it was ready:\n{podman('logs', container)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"image-check: not ready after {READY_TIMEOUT_S:.0f} s:\n{podman('logs', container)}")


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the server starts the native gRPC/HTTP front as a child)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            pending += [int(child) for child in (task / "children").read_text().split()]
    return found


def check_non_root(container: str) -> str:
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", container))
    lines = []
    for member in process_tree(pid):
        status = dict(line.split(":", 1) for line in Path(f"/proc/{member}/status").read_text().splitlines())
        uids, gids = status["Uid"].split(), status["Gid"].split()  # real, effective, saved, filesystem
        if "0" in uids or "0" in gids:
            raise SystemExit(f"image-check: process {member} ({status['Name'].strip()}) runs as uid/gid 0")
        lines.append(f"{status['Name'].strip()} uid={uids[1]} gid={gids[1]}")
    return ", ".join(lines)


def served_precision(http_port: int) -> str:
    """The CPU precision the container chose for the model at load (`cpu_precision: auto` measures it there)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/sparsity", timeout=10) as reply:
        report = json.loads(reply.read())
    return str(report["versions"][0]["details"]["cpu_precision"]["chosen"])


def reference(pixels: np.ndarray, precision: str) -> np.ndarray:
    """The answer of this checkout's CPU runtime on the same model files the image bundles, at `precision`."""
    model_dir = ROOT / "model_repo" / MODEL
    runtime = CpuRuntime(model_dir / "1", read_config(model_dir, MODEL), precision=precision)
    return runtime.infer({"pixels": torch.from_numpy(pixels)})["output"].numpy()


# The part of the output scale two runs of the same program may differ by on another thread count (another GEMM
# blocking, so another fp32 summation order). fp32: reordering a K-term sum moves it by at most ~K * 2**-24 of the
# sum of the terms' magnitudes, ~5e-5 relative for K = 784, so 1e-4 bounds it per layer without hiding a wrong
# model (whose outputs differ by whole units). bf16 rounds every layer's output to 8 bits: a reordered sum that
# lands on the other side of a rounding boundary moves by one bf16 step (2**-8 relative) and the next layer carries
# it; 2e-2 allows a few such steps. int8: the same per-call activation scale on the same rows, exact int32 sums, so
# only a quantisation step flipped by a reordered fp32 input: 2e-2 too.
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "int8": 2e-2}


def assert_close(got: np.ndarray, want: np.ndarray, transport: str, precision: str) -> None:
    """Equal up to what another GEMM blocking changes at the served precision (TOLERANCE), and the same classes."""
    assert got.dtype == np.float32 and got.shape == want.shape, (transport, got.dtype, got.shape)
    scale = float(np.abs(want).max())
    bound = TOLERANCE[precision]
    np.testing.assert_allclose(got, want, rtol=bound, atol=bound * scale,
                               err_msg=f"{transport} answer differs ({precision})")
    assert (got.argmax(1) == want.argmax(1)).all(), f"{transport}: another class than the reference"


def infer_both(http_port: int, grpc_port: int, pixels: np.ndarray) -> str:
    """Both transports' answers against this checkout's at the precision the container serves; returns it."""
    precision = served_precision(http_port)
    want = reference(pixels, precision)
    http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    request = httpclient.InferInput("pixels", list(pixels.shape), "FP32").set_data_from_numpy(pixels)
    assert_close(http.infer(MODEL, [request]).as_numpy("output"), want, "HTTP", precision)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    request = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
    request.set_data_from_numpy(pixels)
    assert grpc.is_server_ready() and grpc.is_model_ready(MODEL)
    assert_close(grpc.infer(MODEL, [request]).as_numpy("output"), want, "gRPC", precision)
    grpc.close()
    http.close()
    return precision


def stop_with_sigterm(container: str) -> tuple[int, float]:
    start = time.monotonic()
    podman("kill", "--signal", "TERM", container)
    code = int(podman("wait", container, timeout=DRAIN_TIMEOUT_S))
    return code, time.monotonic() - start


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    image = argv[0]
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image)
    ports = {"HTTP": free_port(), "GRPC": free_port(), "METRICS": free_port()}
    env = [f"--env=TWOFOUR_{name}_PORT={port}" for name, port in ports.items()]
    container = f"twofour-image-check-{ports['HTTP']}"
    podman("run", "--detach", "--name", container, *RUN_FLAGS, *env, image)
    try:
        print(f"image-check: ready after {wait_ready(container, ports['HTTP']):.1f} s (image user {user})")
        podman("healthcheck", "run", container)
        print("image-check: the image's HEALTHCHECK passes")
        processes = check_non_root(container)
        if "twofour-grpc-fr" not in processes:  # /proc's Name is cut to 15 characters
            raise SystemExit(f"image-check: no native front process ({processes}):\n{podman('logs', container)}")
        print(f"image-check: processes {processes}")
        pixels = np.random.default_rng(19).random((3, 784), dtype=np.float32)
        precision = infer_both(ports["HTTP"], ports["GRPC"], pixels)
        print(f"image-check: {MODEL} over HTTP and gRPC equals this checkout's CPU runtime at the precision the "
              f"container chose ({precision}; 3 rows)")
        code, took = stop_with_sigterm(container)
        if code != 0:
            raise SystemExit(f"image-check: SIGTERM exit status {code}, not 0:\n{podman('logs', container)}")
        print(f"image-check: SIGTERM: exit status 0 after {took:.1f} s")
    finally:
        podman("rm", "--force", container, check=False)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image))
    print(f"image-check: image {image}: {size / 1e6:.0f} MB ({size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
