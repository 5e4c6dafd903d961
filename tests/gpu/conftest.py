"""GPU tests: marked `gpu` and skipped, with the reason, where no CUDA GPU of compute capability >= 8.0 exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.runtime.select import usable_gpu

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = usable_gpu()
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if problem:
                item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU: {problem}"))
