"""Write English sentence files from text that ships with Python and installed pip packages (no downloads).

Five files, from four disjoint sources, so agreement can be measured away from the calibration text:
- calibration.txt + heldout.txt: docstrings of Python standard-library modules (the calibration source; heldout.txt
  is the in-distribution check, disjoint sentences from the same source).
- ood_selection.txt: prose of the Python language reference (`pydoc_data.topics`, shipped with the stdlib). The
  out-of-distribution set recipes are chosen on.
- ood_verify.txt: scikit-learn's dataset descriptions (sklearn/datasets/descr/*.rst) and the long descriptions
  (METADATA) of a fixed list of installed packages. Nobody tunes on it: it verifies the chosen recipe.
- ood_fresh.txt: the license files of every installed distribution (legal English, unlike code docs). Added in
  session 10 after ood-verify had been looked at while comparing recipes: a set that no recipe choice has seen.
Sentences are cleaned, deduplicated (also across files), filtered to 6..60 words and shuffled with a fixed seed.
Run from the repository root: `python bench/data/make_sentences.py`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
STDLIB = ["argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email", "fractions", "functools",
          "heapq", "http.client", "inspect", "itertools", "json", "logging", "os", "pathlib", "pickle", "random",
          "re", "shutil", "socket", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
          "typing", "unittest", "urllib.request", "uuid", "zipfile", "calendar", "difflib", "sqlite3", "enum"]
PACKAGES = ["requests", "rich", "click", "httpx", "pydantic", "fastapi", "uvicorn", "jinja2", "attrs", "hypothesis",
            "tqdm", "packaging", "pyparsing", "networkx", "sympy", "pandas", "matplotlib", "scipy", "joblib"]
CALIBRATION, HELD_OUT, SELECTION, VERIFY, FRESH = 1024, 256, 320, 320, 320


def stdlib_docstrings() -> list[str]:
    found = []
    for name in STDLIB:
        module = importlib.import_module(name)
        found.append(inspect.getdoc(module) or "")
        for _, member in inspect.getmembers(module):
            if (inspect.isfunction(member) or inspect.isclass(member)) and getattr(member, "__module__", "") == name:
                found.append(inspect.getdoc(member) or "")
    return found


def language_reference() -> list[str]:
    from pydoc_data import topics

    return [topics.topics[k] for k in sorted(topics.topics)]


def dataset_descriptions_and_readmes() -> list[str]:
    import sklearn.datasets

    descr = Path(sklearn.datasets.__file__).parent / "descr"
    found = [p.read_text(encoding="utf-8") for p in sorted(descr.glob("*.rst"))]
    for name in PACKAGES:
        try:
            found.append(importlib.metadata.metadata(name).get_payload() or "")  # type: ignore[attr-defined]
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def license_texts() -> list[str]:
    found = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"].lower()):
        for file in dist.files or []:
            base = str(file).rsplit("/", 1)[-1].lower()
            if "license" in base or "copying" in base:
                try:
                    found.append(file.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError):
                    continue
    return found


def sentences(text: str) -> list[str]:
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"\s+", " ", re.sub(r"[=\-*`>|_~#\[\]]{2,}|:[a-z]+:", " ", text))
    out = []
    for piece in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        piece = piece.strip()
        words = piece.split()
        letters = sum(c.isalpha() for c in piece)
        if 6 <= len(words) <= 60 and letters > 0.7 * len(piece.replace(" ", "")) and piece[0].isupper():
            out.append(piece)
    return out


def unique_shuffled(texts: list[str], taken: set[str]) -> list[str]:
    found = sorted({s for t in texts for s in sentences(t)} - taken)
    random.Random(0).shuffle(found)
    taken.update(found)
    return found


def write(name: str, lines: list[str]) -> None:
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{name}: {len(lines)} sentences")


def main() -> None:
    taken: set[str] = set()
    stdlib = unique_shuffled(stdlib_docstrings(), taken)
    write("heldout.txt", stdlib[:HELD_OUT])
    write("calibration.txt", stdlib[HELD_OUT:HELD_OUT + CALIBRATION])
    write("ood_selection.txt", unique_shuffled(language_reference(), taken)[:SELECTION])
    write("ood_verify.txt", unique_shuffled(dataset_descriptions_and_readmes(), taken)[:VERIFY])
    write("ood_fresh.txt", unique_shuffled(license_texts(), taken)[:FRESH])


if __name__ == "__main__":
    main()
