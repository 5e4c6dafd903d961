"""A small reader for the project's Dockerfile and .dockerignore (no Docker engine exists on these machines).

Only what the tests need: instructions with continuation lines joined, and Docker's .dockerignore rules
(Go filepath.Match patterns plus `**`, later rules win, `!` re-includes, a matched directory excludes its files).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """["a", "b"] (JSON) or a shell-split plain form."""
        text = self.arguments.strip()
        return json.loads(text) if text.startswith("[") else shlex.split(text)


def instructions(path: Path) -> list[Instruction]:
    result: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped by Docker too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        result.append(Instruction(keyword.upper(), rest.strip()))
        pending = ""
    return result


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"  # zero or more directories
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def _clean(pattern: str) -> str:
    return re.sub(r"/+", "/", pattern.strip()).strip("/")


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, re.Pattern[str]], ...]  # (exclude?, pattern)

    @classmethod
    def read(cls, path: Path) -> "DockerIgnore":
        rules = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            rules.append((not negate, _pattern_regex(_clean(line[1:] if negate else line))))
        return cls(tuple(rules))

    def excluded(self, relative: str) -> bool:
        """Whether the file at `relative` (slash-separated, from the context root) stays out of the context."""
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for exclude, regex in self.rules:
            if any(regex.fullmatch(p) for p in prefixes):
                verdict = exclude
        return verdict
