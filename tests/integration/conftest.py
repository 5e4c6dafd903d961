"""Shared integration fixtures: one real model repository and one real server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.models import build_test_repository
from tests.support.server import ServerProcess, running_server


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("model_repo")
    modules = build_test_repository(root)
    return root, modules


@pytest.fixture(scope="session")
def server(model_repository: tuple[Path, dict[str, torch.nn.Module]]) -> Iterator[ServerProcess]:
    """The shared server over the test repository (explicit models are loaded by mode 'none': all of them)."""
    with running_server(model_repository[0]) as process:
        yield process


@pytest.fixture(scope="session")
def modules(model_repository: tuple[Path, dict[str, torch.nn.Module]]) -> dict[str, torch.nn.Module]:
    return model_repository[1]
