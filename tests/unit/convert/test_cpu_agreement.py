"""The converter scores every CPU precision and --max-accuracy-drop applies to each; the runtime honours it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.convert.pipeline import ConvertOptions, convert
from server.repository import REPORT_FILE, read_config
from server.runtime.cpu import CpuRuntime
from server.runtime.cpu_precision import REPORT_KEY, int8_available
from tests.unit.convert.tiny_models import write_mlp


def converted(tmp_path: Path, max_drop: float | None = None) -> tuple[Path, dict]:
    tmp_path.mkdir(exist_ok=True)
    program, calibration = write_mlp(tmp_path)
    result = convert(ConvertOptions(source=program, name="mlp", output_repository=tmp_path / "repo",
                                    calibration=calibration, method="magnitude", max_batch_size=8,
                                    max_accuracy_drop=max_drop, show_progress=False))
    return result.version_dir, result.report


def test_each_precision_is_scored_on_the_evaluation_data(tmp_path: Path) -> None:
    version_dir, report = converted(tmp_path)
    section = report[REPORT_KEY]
    assert section["fp32"] == {"drop": report["evaluation"]["drop"], "allowed": True}
    expected = {"fp32", "bf16", "int8"} if int8_available() else {"fp32", "bf16"}
    assert set(section) == expected
    for precision in expected - {"fp32"}:
        figures = section[precision]
        assert figures["allowed"] and figures["outputs"]["output"]["mean_cosine"] > 0.5
        assert figures["drop"] != section["fp32"]["drop"] or precision == "bf16"  # int8 really changed outputs
    # bf16 rounding moves the cosine to the dense source by ~1e-5 (test_cpu_precision.py), so the drop (in
    # points of 100 x (1 - cosine)) by well under 0.01
    assert abs(section["bf16"]["drop"] - section["fp32"]["drop"]) < 0.01
    assert json.loads((version_dir / REPORT_FILE).read_text())[REPORT_KEY] == section


def test_the_drop_limit_applies_to_each_precision_and_the_runtime_never_serves_one_over_it(tmp_path: Path) -> None:
    _, free = converted(tmp_path / "a")
    fp32_drop = free["evaluation"]["drop"]
    version_dir, report = converted(tmp_path / "b", max_drop=fp32_drop)  # exactly fp32's: passes, lower may not
    for figures in report[REPORT_KEY].values():
        assert figures["allowed"] == (figures["drop"] <= fp32_drop)
    refused = {p for p, f in report[REPORT_KEY].items() if not f["allowed"]}
    assert refused or not int8_available()  # int8 moves the cosine by ~1e-4: over a limit of exactly fp32's drop
    config = read_config(version_dir.parent, "mlp")
    auto = CpuRuntime(version_dir, config, precision="auto").describe().details["cpu_precision"]
    assert auto["chosen"] not in refused
    assert {c["precision"] for c in auto["candidates"]}.isdisjoint(refused)
    for precision in refused:
        assert "over the conversion's --max-accuracy-drop" in auto["reason"]
        with pytest.raises(ValueError, match=f"cpu_precision '{precision}' is over the conversion's"):
            CpuRuntime(version_dir, config, precision=precision)
