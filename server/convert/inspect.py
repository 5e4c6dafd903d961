"""`twofour inspect model_repo/NAME`: the config, every stored weight (2:4 or dense), and the conversion report.

Reads only headers (safetensors shapes, config text, sparsity.json) so it is instant even for large models.
With `--url`, it also asks a running server how it actually runs the model (GET /v2/models/NAME/sparsity).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from google.protobuf import text_format
from rich.console import Console
from rich.table import Table
from safetensors import safe_open

from server.artifacts import MASK_SUFFIX, VALUES_SUFFIX
from server.convert.report import print_report
from server.repository import REPORT_FILE, WEIGHTS_FILE, RepositoryError, read_config, select_versions


def stored_layers(weights_file: Path) -> list[tuple[str, list[int], bool, int]]:
    """(name, dense shape, stored 2:4?, stored bytes) per parameter, from the safetensors header only."""
    rows: dict[str, tuple[list[int], bool, int]] = {}
    with safe_open(str(weights_file), framework="pt") as handle:
        for key in handle.keys():
            piece = handle.get_slice(key)
            shape = list(piece.get_shape())
            size = 1
            for d in shape:
                size *= d
            nbytes = size * {"F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I64": 8, "F64": 8}.get(piece.get_dtype(), 4)
            if key.endswith(VALUES_SUFFIX):
                base = key[: -len(VALUES_SUFFIX)]
                old = rows.get(base, ([], True, 0))
                rows[base] = ([shape[0], shape[1] * 2], True, old[2] + nbytes)
            elif key.endswith(MASK_SUFFIX):
                base = key[: -len(MASK_SUFFIX)]
                old = rows.get(base, ([], True, 0))
                rows[base] = (old[0], True, old[2] + nbytes)
            else:
                rows[key] = (shape, False, nbytes)
    return [(name, *rows[name]) for name in sorted(rows)]


def fetch_live_report(url: str, name: str) -> dict:
    target = f"{url.rstrip('/')}/v2/models/{name}/sparsity"
    try:
        with urllib.request.urlopen(target, timeout=10) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise ValueError(f"{target}: HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"{target}: {exc}") from None


def inspect_model(model: Path, version: int | None = None, url: str | None = None,
                  console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 140)
    if not model.is_dir():
        raise ValueError(f"{model}: not a model directory")
    try:
        config = read_config(model, model.name)
        versions = select_versions(model, config) if version is None else [version]
    except RepositoryError as exc:
        raise ValueError(str(exc)) from None
    if not versions:
        raise ValueError(f"{model.name}: has no numeric version directory")
    chosen = model / str(versions[-1])
    if not chosen.is_dir():
        raise ValueError(f"{model.name}: version {versions[-1]} does not exist")
    console.rule(f"{model.name} / config.pbtxt")
    console.print(text_format.MessageToString(config), markup=False)
    table = Table(title=f"{model.name} version {chosen.name}: stored weights")
    for column in ("tensor", "shape", "storage", "bytes"):
        table.add_column(column)
    for name, shape, sparse, nbytes in stored_layers(chosen / WEIGHTS_FILE):
        table.add_row(name, "x".join(map(str, shape)), "2:4" if sparse else "dense", str(nbytes))
    console.print(table)
    report_file = chosen / REPORT_FILE
    if report_file.is_file():
        console.rule("conversion report (sparsity.json)")
        print_report(json.loads(report_file.read_text(encoding="utf-8")), console)
    else:
        console.print("no sparsity.json in this version (not written by twofour convert)")
    if url:
        console.rule(f"live report from {url}")
        console.print_json(json.dumps(fetch_live_report(url, model.name)))
