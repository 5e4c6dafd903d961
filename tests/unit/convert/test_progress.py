"""`twofour convert` shows progress bars on stderr even when it is not a terminal (logs, CI, pipes) unless --quiet:
the calibration passes and the per-layer pruning, for an exported program and for a Hugging Face encoder."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from server.cli import main as cli_main
from tests.unit.convert import tiny_models


def run_convert(source: Path, calibration: Path, repo: Path, *flags: str) -> int:
    return cli_main(["convert", str(source), "--name", "m", "--output-repository", str(repo), "--calibration",
                     str(calibration), "--method", "sparsegpt", *flags])


def finished(err: str, label: str, total: int) -> bool:
    """The bar `label` was drawn in its final state, total/total (bars that stay on screen)."""
    return re.search(rf"{re.escape(label)}: 100%\|[^|]*\| {total}/{total} ", err) is not None


def drawn(err: str, label: str, total: int) -> bool:
    """The bar `label` over `total` steps was drawn (a pass's bar is cleared when it ends, so it may never be
    redrawn past 0% on a fast pass)."""
    return re.search(rf"{re.escape(label)}: +\d+%\|[^|]*\| \d+/{total} ", err) is not None


def test_program_conversion_shows_calibration_and_layer_bars(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()
    program, calibration = tiny_models.write_mlp(tmp_path)  # 96 samples: 6 batches per calibration pass
    assert run_convert(program, calibration, tmp_path / "repo") == 0
    err = capsys.readouterr().err
    assert finished(err, "pruning layers", 3), err
    for layer in ("fc1", "fc2", "fc3"):
        assert drawn(err, f"calibrating {layer}", 6), err
    assert run_convert(program, calibration, tmp_path / "quiet", "--quiet") == 0
    err = capsys.readouterr().err
    assert "pruning layers" not in err and "calibrat" not in err, err


def test_encoder_conversion_shows_calibration_and_layer_bars(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    directory = tiny_models.write_encoder(tmp_path / "tiny")
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(tiny_models.LINES) + "\n", encoding="utf-8")  # 20 lines: 2 batches
    capsys.readouterr()
    assert run_convert(directory, calibration, tmp_path / "repo") == 0
    err = capsys.readouterr().err
    assert finished(err, "calibration inputs", 2), err
    assert finished(err, "pruning layers", 12), err
    assert drawn(err, "calibrating model.encoder.layer.1.output.dense", 2), err
