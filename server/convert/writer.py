"""Write a converted version into a model repository, all or nothing.

Everything is written into a hidden staging directory inside the repository (same filesystem, so the final step
is a rename, and `.`-names are never listed as models). Only after evaluation passes is it moved into place;
a failed or rejected conversion leaves the repository exactly as it was. Files are deterministic: tensors sorted
by name, the program saved under a fixed file name (torch.export's archive records the file stem), and
sparsity.json holds no wall-clock time (report.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import save_program, save_weights
from server.convert.serving_config import add_padding, add_warmup
from server.convert.sources import Source
from server.repository import (
    CONFIG_FILE,
    PROGRAM_FILE,
    REPORT_FILE,
    WEIGHTS_FILE,
    available_versions,
    check_model_name,
    validate_config,
    write_config,
)
from server.types import TORCH_TO_WIRE, WIRE_TO_CONFIG


def build_config(name: str, source: Source, max_batch_size: int, dynamic_batching: bool) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="twofour", max_batch_size=max_batch_size)
    for specs, field in ((source.inputs, config.input), (source.outputs, config.output)):
        for spec in specs:
            tensor = field.add(name=spec.name, dims=list(spec.dims))
            tensor.data_type = mc.DataType.Value(WIRE_TO_CONFIG[TORCH_TO_WIRE[spec.dtype]])
            if spec.optional and specs is source.inputs:
                tensor.optional = True
    if dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = 500
        add_padding(config, source)  # padding merges requests only where a dynamic batcher forms batches
    add_warmup(config)
    validate_config(config, name)
    return config


class Staging:
    """A version being written: `dir` is the version directory inside a hidden staging area."""

    def __init__(self, root: Path, name: str, version: int | None) -> None:
        check_model_name(name)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.name = name
        existing = available_versions(root / name) if (root / name).is_dir() else []
        self.version = version if version is not None else (max(existing) + 1 if existing else 1)
        if self.version < 1:
            raise ValueError(f"--version must be a positive integer, got {self.version}")
        if self.version in existing:
            raise ValueError(f"model {name!r} already has version {self.version}; pick another --version")
        self.area = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=root))
        self.dir = self.area / str(self.version)
        self.dir.mkdir()

    def write_model(self, config: mc.ModelConfig, program: torch.export.ExportedProgram,
                    weights: dict[str, torch.Tensor], sparse: set[str]) -> None:
        write_config(self.area, config)
        save_program(program, self.dir / PROGRAM_FILE)
        save_weights(weights, sparse, self.dir / WEIGHTS_FILE)

    def write_report(self, report: dict[str, Any]) -> None:
        text = json.dumps(report, indent=2, sort_keys=True) + "\n"
        (self.dir / REPORT_FILE).write_text(text, encoding="utf-8")

    def commit(self) -> Path:
        """Move the version (and config.pbtxt) into the repository; returns the version directory."""
        for path in [self.dir, *self.dir.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # staging helpers (mkdtemp, safetensors) make them private
        model = self.root / self.name
        model.mkdir(exist_ok=True)
        final = model / str(self.version)
        if final.exists():
            raise ValueError(f"model {self.name!r} version {self.version} appeared while converting; nothing written")
        os.replace(self.dir, final)
        os.replace(self.area / CONFIG_FILE, model / CONFIG_FILE)
        self.discard()
        return final

    def discard(self) -> None:
        shutil.rmtree(self.area, ignore_errors=True)
