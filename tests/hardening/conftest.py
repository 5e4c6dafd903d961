"""Hardening fixtures: one real server over the shared test repository, with small limits and a repository token,
shared by the wire-level fuzz, schema and security tests (the server must survive all of them in turn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch

from tests.hardening.wire import Http
from tests.support.models import build_bytes_repository, build_test_repository
from tests.support.server import ServerProcess, running_server

TOKEN = "hardening-token"
MAX_BYTES = 1024 * 1024
MAX_ELEMENTS = 100_000


@pytest.fixture(scope="session")
def hard_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("hardening_repo")
    return root, {**build_test_repository(root), **build_bytes_repository(root)}


@pytest.fixture(scope="session")
def hard_server(hard_repository: tuple[Path, dict[str, torch.nn.Module]]) -> Iterator[ServerProcess]:
    """Every model loaded (mode none), 1 MiB / 100k-element limits, load/unload behind a bearer token."""
    with running_server(hard_repository[0], "--max-request-bytes", str(MAX_BYTES),
                        "--max-request-elements", str(MAX_ELEMENTS), "--repository-token", TOKEN) as process:
        yield process


@pytest.fixture(scope="session")
def hard_modules(hard_repository: tuple[Path, dict[str, torch.nn.Module]]) -> dict[str, torch.nn.Module]:
    return hard_repository[1]


@pytest.fixture(scope="module")
def http(hard_server: ServerProcess) -> Iterator[Http]:
    """One keep-alive HTTP connection to the hardening server (reconnects after a close)."""
    connection = Http(hard_server)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def channel(hard_server: ServerProcess) -> Iterator[grpc.Channel]:
    """A gRPC channel to the hardening server that may send messages of any size."""
    ch = grpc.insecure_channel(hard_server.grpc_url, options=[("grpc.max_send_message_length", -1)])
    yield ch
    ch.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.hardening.tally import TRIED

    if TRIED:
        terminalreporter.section("fuzz inputs tried")
        for what, count in sorted(TRIED.items()):
            terminalreporter.write_line(f"{count:8d}  {what}")
        terminalreporter.write_line(f"{sum(TRIED.values()):8d}  total")
