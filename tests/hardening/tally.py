"""Counts of fuzz inputs tried, by test, printed at the end of the pytest run (the issue asks for the numbers)."""

from __future__ import annotations

from collections import Counter

TRIED: Counter[str] = Counter()


def tried(what: str, n: int = 1) -> None:
    TRIED[what] += n
