"""`--device cuda` on a machine without a usable GPU fails at start with a clear message; `auto` falls back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.runtime.select import DeviceError, resolve_device, usable_gpu

ROOT = Path(__file__).resolve().parents[3]
no_gpu = pytest.mark.skipif(usable_gpu() is None, reason="this machine has a usable GPU")


@no_gpu
def test_resolve_refuses_cuda_and_auto_falls_back() -> None:
    with pytest.raises(DeviceError, match="--device cuda was requested but"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


@no_gpu
def test_serve_with_device_cuda_exits_before_opening_ports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--model-repository", str(tmp_path), "--device", "cuda",
         "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "twofour serve: --device cuda was requested but" in result.stderr
    assert "Traceback" not in result.stderr
