"""Write English sentences from text that ships with installed packages (no downloads): calibration + held-out.

Sources: the DESCR texts of scikit-learn's bundled datasets and the docstrings of Python standard-library modules.
Sentences are cleaned, deduplicated, filtered to 6..60 words, shuffled with a fixed seed and split in two disjoint
files. Run from the repository root: `python bench/data/make_sentences.py`.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
STDLIB = ["argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email", "fractions", "functools",
          "heapq", "http.client", "inspect", "itertools", "json", "logging", "os", "pathlib", "pickle", "random",
          "re", "shutil", "socket", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
          "typing", "unittest", "urllib.request", "uuid", "zipfile", "calendar", "difflib", "sqlite3", "enum"]


def texts() -> list[str]:
    from sklearn import datasets

    found = []
    for loader in ("load_iris", "load_diabetes", "load_digits", "load_wine", "load_breast_cancer", "load_linnerud"):
        found.append(getattr(datasets, loader)().DESCR)
    for name in STDLIB:
        module = importlib.import_module(name)
        found.append(inspect.getdoc(module) or "")
        for _, member in inspect.getmembers(module):
            if (inspect.isfunction(member) or inspect.isclass(member)) and getattr(member, "__module__", "") == name:
                found.append(inspect.getdoc(member) or "")
    return found


def sentences(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", re.sub(r"[=\-*`>|_~]{2,}|:[a-z]+:", " ", text))
    out = []
    for piece in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        piece = piece.strip()
        words = piece.split()
        letters = sum(c.isalpha() for c in piece)
        if 6 <= len(words) <= 60 and letters > 0.7 * len(piece.replace(" ", "")) and piece[0].isupper():
            out.append(piece)
    return out


def main() -> None:
    unique = sorted({s for t in texts() for s in sentences(t)})
    random.Random(0).shuffle(unique)
    held_out, calibration = unique[:256], unique[256:]
    (HERE / "heldout.txt").write_text("\n".join(held_out) + "\n", encoding="utf-8")
    (HERE / "calibration.txt").write_text("\n".join(calibration) + "\n", encoding="utf-8")
    print(f"{len(calibration)} calibration and {len(held_out)} held-out sentences")


if __name__ == "__main__":
    main()
