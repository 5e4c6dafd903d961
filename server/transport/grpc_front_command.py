"""Which gRPC front process to run: the native one (C++, `native/grpc_front/`) or the Python one (grpc_front.py).

Why two: both own the public port and relay raw bytes to the server the same way (same command line, same stdout
line, same lifecycle), but the Python front spends ~330 µs of CPU per RPC in grpc.aio, and on a machine where
client, front and model share the cores that CPU is throughput lost (bench/RESULTS.md). The native binary needs a
C++ build (`make native`, or the Docker image), so a plain `pip install` has only the Python one; `auto` (the
default) takes the native front when its binary is found and says which one it took.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

NATIVE_NAME = "twofour-grpc-front"
BINARY_ENV = "TWOFOUR_GRPC_FRONT_BINARY"
SOURCE_BUILD = Path(__file__).resolve().parents[2] / "native" / "build" / NATIVE_NAME  # `make native` in a checkout


class FrontUnavailable(OSError):
    """`--grpc-frontend native` without a binary: the server refuses to start rather than serve something else."""


def native_binary() -> str | None:
    """$TWOFOUR_GRPC_FRONT_BINARY, else `twofour-grpc-front` on PATH, else a source checkout's `make native` build."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which(NATIVE_NAME)
    if found:
        return found
    return str(SOURCE_BUILD) if os.access(SOURCE_BUILD, os.X_OK) else None


def front_command(mode: str) -> tuple[list[str], str]:
    """The front's command (without its arguments) and its implementation's name, for `--grpc-frontend MODE`."""
    python = [sys.executable, "-m", "server.transport.grpc_front"]
    if mode == "python":
        return python, "python"
    binary = native_binary()
    if binary is not None:
        return [binary], "native"
    if mode == "native":
        raise FrontUnavailable(f"--grpc-frontend native needs the {NATIVE_NAME} binary: build it with `make native`, "
                               f"put it on PATH or name it in ${BINARY_ENV}; or use --grpc-frontend auto or python")
    return python, "python"
