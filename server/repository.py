"""The model repository on disk: find models, parse and validate config.pbtxt, pick versions.

This module is the contract between `twofour convert` (which writes it) and `twofour serve` (which reads it).
It touches only the filesystem and the config message; loading weights and programs lives in runtime/.
Every error names the file and the field, so an operator can fix the repository without reading code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

CONFIG_FILE = "config.pbtxt"
BACKEND = "twofour"
PROGRAM_FILE = "program.pt2"
WEIGHTS_FILE = "weights.safetensors"
REPORT_FILE = "sparsity.json"
# Only these may sit in a version directory: nothing that a loader could be tricked into unpickling.
ALLOWED_VERSION_FILES = frozenset({PROGRAM_FILE, WEIGHTS_FILE, REPORT_FILE})
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class RepositoryError(ValueError):
    """A repository problem; the message names the model, file and field, never an absolute path."""


def check_model_name(name: str) -> str:
    """A model name that is safe to join onto the repository root (no separators, no '..', no hidden files)."""
    if not _NAME.match(name) or name in {".", ".."}:
        raise RepositoryError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def model_dir(root: Path, name: str) -> Path:
    """`root/name`, refusing anything (names, symlinks) that would resolve outside the repository root."""
    check_model_name(name)
    path = root / name
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise RepositoryError(f"model {name!r} resolves outside the model repository")
    return path


def _inside(real_root: str, path: Path) -> bool:
    """Whether `path`, with every symlink resolved, lies under `real_root` (a prefix test would pass /repo2)."""
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def list_model_names(root: Path) -> list[str]:
    """Every directory in the repository that looks like a model (valid name), sorted."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root.name!r} does not exist or is not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))


def parse_config(text: str, source: str = CONFIG_FILE) -> mc.ModelConfig:
    """Parse protobuf text format into a ModelConfig, with the parser's complaint in the message."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RepositoryError(f"{source}: {exc}") from None
    return config


def read_config(path: Path, expected_name: str) -> mc.ModelConfig:
    """Read and validate `<model>/config.pbtxt`."""
    source = f"{expected_name}/{CONFIG_FILE}"
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RepositoryError(f"{source}: file is missing")
    if not _inside(os.path.realpath(path.parent), config_path):  # its parse errors would quote the outside file
        raise RepositoryError(f"{source}: is a symlink that points outside the model repository")
    config = parse_config(config_path.read_text(encoding="utf-8"), source)
    validate_config(config, expected_name, source)
    return config


def write_config(path: Path, config: mc.ModelConfig) -> None:
    """Write `config.pbtxt` in the same text format Triton uses."""
    (path / CONFIG_FILE).write_text(text_format.MessageToString(config), encoding="utf-8")


def _validate_tensors(tensors: Sequence[Any], kind: str, source: str, batched: bool) -> None:
    if not tensors:
        raise RepositoryError(f"{source}: field '{kind}' must list at least one tensor")
    seen: set[str] = set()
    for i, tensor in enumerate(tensors):
        where = f"{source}: {kind}[{i}]"
        if not tensor.name:
            raise RepositoryError(f"{where}: field 'name' is empty")
        if tensor.name in seen:
            raise RepositoryError(f"{where}: duplicate name {tensor.name!r}")
        seen.add(tensor.name)
        if tensor.data_type == mc.TYPE_INVALID:
            raise RepositoryError(f"{where} ({tensor.name}): field 'data_type' is missing")
        dims = list(tensor.dims)
        if not dims and not batched:
            raise RepositoryError(f"{where} ({tensor.name}): field 'dims' is empty")
        for d in dims:
            if d == 0 or d < -1:
                raise RepositoryError(f"{where} ({tensor.name}): dims {dims} may hold only positive sizes or -1")


def validate_config(config: mc.ModelConfig, expected_name: str, source: str = CONFIG_FILE) -> None:
    """Check the fields twofour relies on; fill Triton's defaults (name, instance count, version policy)."""
    if not config.name:
        config.name = expected_name
    if config.name != expected_name:
        raise RepositoryError(f"{source}: field 'name' is {config.name!r} but the directory is {expected_name!r}")
    if config.backend and config.backend != BACKEND:
        raise RepositoryError(f"{source}: field 'backend' is {config.backend!r}; twofour serves only {BACKEND!r}")
    config.backend = BACKEND
    if config.max_batch_size < 0:
        raise RepositoryError(f"{source}: field 'max_batch_size' must be >= 0, got {config.max_batch_size}")
    batched = config.max_batch_size > 0
    _validate_tensors(config.input, "input", source, batched)
    _validate_tensors(config.output, "output", source, batched)
    if config.HasField("dynamic_batching"):
        if not batched:
            raise RepositoryError(f"{source}: 'dynamic_batching' needs max_batch_size > 0")
        for size in config.dynamic_batching.preferred_batch_size:
            if not 0 < size <= config.max_batch_size:
                raise RepositoryError(
                    f"{source}: dynamic_batching.preferred_batch_size {size} must be in 1..max_batch_size "
                    f"({config.max_batch_size})"
                )
    if not config.instance_group:
        config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_AUTO)
    for i, group in enumerate(config.instance_group):
        if group.count == 0:
            group.count = 1
        if group.count < 0:
            raise RepositoryError(f"{source}: instance_group[{i}].count must be positive")
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1


def read_labels(path: Path, config: mc.ModelConfig) -> dict[str, tuple[bytes, ...]]:
    """Each output's classification labels from its `label_filename` (in the model directory, one per line).

    Labels are kept as bytes: they are appended to BYTES classification results as they are in the file."""
    labels: dict[str, tuple[bytes, ...]] = {}
    for i, output in enumerate(config.output):
        if not output.label_filename:
            continue
        where = f"{config.name}/{CONFIG_FILE}: output[{i}] ({output.name}): label_filename {output.label_filename!r}"
        name = Path(output.label_filename)
        if name.is_absolute() or ".." in name.parts:
            raise RepositoryError(f"{where} must be a file name inside the model directory")
        file = path / name
        if not _inside(os.path.realpath(path), file):
            raise RepositoryError(f"{where} resolves outside the model directory")
        if not file.is_file():
            raise RepositoryError(f"{where}: the labels file is missing")
        lines = file.read_bytes().split(b"\n")
        if lines and not lines[-1]:
            lines.pop()  # a final newline ends the last label; it does not start another (as Triton reads it)
        labels[output.name] = tuple(lines)
    return labels


def available_versions(path: Path) -> list[int]:
    """Numeric subdirectories of a model directory, ascending (Triton ignores anything else)."""
    return sorted(int(p.name) for p in path.iterdir()
                  if p.is_dir() and p.name.isascii() and p.name.isdigit() and int(p.name) > 0)


def select_versions(path: Path, config: mc.ModelConfig) -> list[int]:
    """The versions `version_policy` says to serve: latest N (default 1), all, or a specific list."""
    versions = available_versions(path)
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return versions
    if which == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in versions]
        if missing:
            raise RepositoryError(f"{config.name}: version_policy names versions {missing} that have no directory")
        return wanted
    count = policy.latest.num_versions if which == "latest" and policy.latest.num_versions > 0 else 1
    return versions[-count:]


def check_version_dir(path: Path, model: str, version: int) -> None:
    """Refuse version directories that hold pickles or lack the program/weights: nothing is ever unpickled."""
    where = f"{model}/{version}"
    root = os.path.realpath(path.parent.parent)
    if not _inside(root, path):
        raise RepositoryError(f"{where}: the version directory resolves outside the model repository")
    for entry in path.iterdir():
        if entry.name.lower().endswith(PICKLE_SUFFIXES):
            raise RepositoryError(f"{where}: refusing {entry.name!r}: pickle files are never loaded; use safetensors")
        if not _inside(root, entry):
            raise RepositoryError(f"{where}: {entry.name!r} is a symlink that points outside the model repository")
    for required in (PROGRAM_FILE, WEIGHTS_FILE):
        if not (path / required).is_file():
            raise RepositoryError(f"{where}: {required} is missing")
