"""Run a Python command as if some installed packages were absent (the lent GPU machine has no fastapi & co.).

The GPU machine's image holds torch, grpcio, protobuf, prometheus-client, safetensors and numpy, but not the web
stack nor tritonclient. bench/gpu.py and tests/gpu must still do what they can there and say what they skipped.
A meta-path finder placed first raises ModuleNotFoundError for the hidden names, which is exactly what an absent
package does, so this is checked here, on a machine where those packages are installed.
"""

from __future__ import annotations

import sys

GPU_BOX_ABSENT = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "pydantic_settings", "tritonclient",
                  "httptools", "orjson", "rapidjson", "geventhttpclient", "gevent")

_PRELUDE = """
import importlib.abc, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: simulating the GPU machine)", name=name)
        return None
sys.meta_path.insert(0, _Hide())
"""


def python_command(hidden: tuple[str, ...], code: str) -> list[str]:
    """`python -c` running `code` with `hidden` top-level packages unimportable (subprocesses are not affected)."""
    return [sys.executable, "-c", f"HIDDEN = {set(hidden)!r}\n{_PRELUDE}\n{code}"]
