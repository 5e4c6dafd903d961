"""`twofour convert --help` offers every flag of the converter's synopsis under the synopsis' own names, and the
parsed values are the documented defaults (issue 3: the command line is the product's interface)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from server.cli import build_parser
from server.convert.sources import Source, TensorSpec
from server.convert.writer import build_config

SYNOPSIS_FLAGS = ("--name", "--output-repository", "--version", "--method", "--calibration", "--calibration-samples",
                  "--evaluation", "--skip GLOB", "--only GLOB", "--max-batch-size",
                  "--dynamic-batching, --no-dynamic-batching", "--max-accuracy-drop", "--recover, --no-recover")


def help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["convert", "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_synopsis_flag(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)
    for flag in SYNOPSIS_FLAGS:
        assert re.search(rf"^\s+{re.escape(flag)}\b", text, re.MULTILINE), flag
    assert "{magnitude,sparsegpt,wanda}" in text and "source" in text


def test_defaults_and_repeatable_globs() -> None:
    args = build_parser().parse_args(["convert", "m.pt2", "--name", "m", "--calibration", "c.npz"])
    assert (args.method, args.dynamic_batching, args.skip, args.only, args.max_accuracy_drop, args.recover) == (
        "sparsegpt", True, [], [], None, False)
    args = build_parser().parse_args(["convert", "m.pt2", "--name", "m", "--calibration", "c.npz", "--skip", "a.*",
                                      "--skip", "head", "--only", "enc.*", "--no-dynamic-batching",
                                      "--method", "wanda", "--max-batch-size", "8", "--version", "3"])
    assert (args.skip, args.only, args.dynamic_batching, args.method, args.max_batch_size, args.version) == (
        ["a.*", "head"], ["enc.*"], False, "wanda", 8, 3)


def test_unknown_method_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["convert", "m.pt2", "--name", "m", "--calibration", "c.npz", "--method", "obs"])
    assert exit_info.value.code == 2 and "invalid choice: 'obs'" in capsys.readouterr().err


@pytest.mark.parametrize("dynamic", [True, False])
def test_dynamic_batching_flag_decides_the_config(dynamic: bool) -> None:
    source = Source(kind="program", label="t.pt2", model=nn.Identity(), targets=[], heads=set(), blocks=[],
                    inputs=[TensorSpec("pixels", torch.float32, (8,))],
                    outputs=[TensorSpec("out", torch.float32, (8,))],
                    export=lambda: None)  # type: ignore[arg-type, return-value]
    config = build_config("m", source, 16, dynamic)
    assert config.max_batch_size == 16 and config.backend == "twofour"
    assert config.HasField("dynamic_batching") is dynamic
