"""Write bench/data/prose.txt: English prose sentences for the embedding benchmark, from a source that neither the
calibration nor the held-out file uses: the Python language reference shipped with the interpreter
(`pydoc_data.topics`), not module docstrings or scikit-learn texts. Sentences of 6..60 words, without code
lines, deduplicated, shuffled with a fixed seed. Run from the repository root: `python bench/data/make_prose.py`.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
COUNT = 320


def sentences() -> list[str]:
    from pydoc_data.topics import topics

    found: set[str] = set()
    for text in topics.values():
        for paragraph in re.split(r"\n\s*\n", text):
            if paragraph.startswith(("   ", ">>>", "*")) or "::" in paragraph:
                continue  # code blocks and grammar rules
            flat = " ".join(paragraph.split())
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                words = sentence.split()
                if 6 <= len(words) <= 60 and sentence.endswith(".") and not re.search(r"[{}<>=]|\(\)", sentence):
                    found.add(sentence)
    ordered = sorted(found)
    random.Random(0).shuffle(ordered)
    return ordered[:COUNT]


if __name__ == "__main__":
    lines = sentences()
    (HERE / "prose.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} sentences to {HERE / 'prose.txt'}")
