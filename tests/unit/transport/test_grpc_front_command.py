"""Which front `--grpc-frontend` runs: the native binary when asked for or found, the Python module otherwise, and a
clear refusal when `native` is asked for without a binary."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from server.transport import grpc_front_command as command
from server.transport.grpc_front_command import BINARY_ENV, FrontUnavailable, front_command

PYTHON_FRONT = [sys.executable, "-m", "server.transport.grpc_front"]


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture()
def no_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No binary anywhere: not configured, not on PATH, not built in this checkout."""
    monkeypatch.delenv(BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(command, "SOURCE_BUILD", tmp_path / "missing")


def test_python_is_the_python_front_even_with_a_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BINARY_ENV, str(executable(tmp_path / "front")))
    assert front_command("python") == (PYTHON_FRONT, "python")


def test_the_configured_binary_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = executable(tmp_path / "front")
    monkeypatch.setenv(BINARY_ENV, str(binary))
    assert front_command("auto") == ([str(binary)], "native")
    assert front_command("native") == ([str(binary)], "native")


def test_a_binary_on_path_is_found(no_binary: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = executable(tmp_path / command.NATIVE_NAME)
    assert front_command("auto") == ([str(binary)], "native")


def test_auto_falls_back_to_python_without_a_binary(no_binary: None) -> None:
    assert front_command("auto") == (PYTHON_FRONT, "python")


def test_native_without_a_binary_is_refused_with_what_to_do(no_binary: None) -> None:
    with pytest.raises(FrontUnavailable, match="make native"):
        front_command("native")


def test_a_configured_path_that_is_not_executable_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    (tmp_path / "front").write_text("not a program")
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "front"))
    assert not os.access(tmp_path / "front", os.X_OK)
    with pytest.raises(FrontUnavailable):
        front_command("native")
