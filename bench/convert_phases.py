"""Where one MiniLM conversion spends its time: each pipeline phase of `twofour convert` timed in place.

Issue 17 asks for under 300 s on 2 cores; the total depends on the CPU (178 s with avx512_bf16, 330 s on AVX2
only, bench/RESULTS.md session 9), so this names the phase to cut. The recipe is bench/quality.py's `recover`
(256 stdlib-docstring sentences, evaluation on ood_selection.txt); RecoverOptions fields can be overridden:

    python bench/convert_phases.py                      # the shipped --recover
    python bench/convert_phases.py steps=600 augment=2  # another recipe
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality import minilm_conversion  # noqa: E402
from server.convert import pipeline  # noqa: E402
from server.convert.pipeline import convert  # noqa: E402
from server.convert.recover import RecoverOptions  # noqa: E402

SECONDS: dict[str, float] = {}
PHASES = {  # label: (owner, attribute) as pipeline.convert calls them
    "load and export the model": (pipeline, "load_source"),
    "read calibration/evaluation": (pipeline, "load_dataset"),
    "dense reference outputs": (pipeline.evaluate, "dense_outputs"),
    "per-layer sensitivity": (pipeline, "sensitivity"),
    "SparseGPT + refit + distillation": (pipeline.Pruner, "run"),
    "write the files": (pipeline.Staging, "write_model"),
    "run the written files": (pipeline.evaluate, "written_outputs"),
    "each CPU precision's agreement": (pipeline.cpu_agreement, "scores"),
}


def timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[label] = SECONDS.get(label, 0.0) + time.perf_counter() - start
    return wrapper


PARSE: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true")}


def options(argv: list[str]) -> RecoverOptions:
    """RecoverOptions from `field=value` arguments (each parsed by its field's declared type)."""
    types = {f.name: str(f.type) for f in fields(RecoverOptions)}
    values: dict[str, Any] = {}
    for item in argv:
        name, _, value = item.partition("=")
        if name not in types:
            raise SystemExit(f"unknown RecoverOptions field {name!r}; one of {sorted(types)}")
        values[name] = PARSE[types[name]](value)
    return RecoverOptions(**values)


def main() -> None:
    recover = options(sys.argv[1:])
    for label, (owner, name) in PHASES.items():
        setattr(owner, name, timed(label, getattr(owner, name)))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        convert(minilm_conversion(Path(tmp), "sparsegpt", recover))
        total = time.perf_counter() - start
    print(f"\n{recover}\n\n| phase | s |\n|---|---|")
    for label, seconds in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {seconds:.1f} |")
    print(f"| everything else | {total - sum(SECONDS.values()):.1f} |\n| total | {total:.1f} |")


if __name__ == "__main__":
    main()
