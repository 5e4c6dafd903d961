"""Run the real `twofour serve` as a subprocess on free loopback ports, for integration tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A started server; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, repository: Path, *args: str, env: dict[str, str] | None = None, wait_ready: bool = True,
                 timeout: float = 60.0) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="twofour-server-", suffix=".log", delete=False)
        command = [sys.executable, "-m", "server", "serve", "--model-repository", str(repository),
                   "--host", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                   "--metrics-port", str(self.metrics_port), "--device", "cpu", "--intra-op-threads", "1", *args]
        # keep an inherited PYTHONPATH: on the lent GPU machine it points at packages carried as wheels
        python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        full_env = {**os.environ, "PYTHONPATH": python_path, **(env or {})}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        if wait_ready:
            try:
                self.wait_ready(timeout)
            except BaseException:  # never leave a server running that no test will stop (a swamped machine)
                self.stop(timeout=10)
                raise

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@contextlib.contextmanager
def running_server(repository: Path, *args: str, **kwargs: object) -> Iterator[ServerProcess]:
    """A server for the duration of a `with` block; leaving it asserts a clean SIGTERM exit (code 0)."""
    process = ServerProcess(repository, *args, **kwargs)  # type: ignore[arg-type]
    try:
        yield process
    finally:
        code = process.stop()
        assert code == 0, f"server exited with {code}:\n{process.output()}"
