"""Recovery on a real (tiny) encoder and MLP through `convert`: masks stay exactly 2:4, LayerNorms and biases are
trained, the result is deterministic, agreement on unseen lines improves, and --keep-dense keeps the most sensitive."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from server.artifacts import load_weights
from server.convert.pipeline import ConvertOptions, convert
from server.convert.recover import RecoverOptions
from server.repository import WEIGHTS_FILE
from server.sparsity import is_2_4
from tests.unit.convert import tiny_models

UNSEEN = ["the green bird sat under a far tree", "a red cat flew quickly over the mat", "old dog near blue house",
          "the big bird ran slowly away", "a tree sat on the small red house", "blue mat under the new cat"] * 3
RECOVER = RecoverOptions(steps=40, final_steps=10, learning_rate=1e-3, final_learning_rate=1e-4, augment=1)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("enc")
    (work / "calibration.txt").write_text("\n".join(tiny_models.LINES) + "\n", encoding="utf-8")
    (work / "unseen.txt").write_text("\n".join(UNSEEN) + "\n", encoding="utf-8")
    return {"dir": tiny_models.write_encoder(work / "tiny"), "work": work}


def run(case: dict, repo: str, recover: RecoverOptions | None, **extra: object) -> dict:
    result = convert(ConvertOptions(source=case["dir"], name="enc", output_repository=case["work"] / repo,
                                    calibration=case["work"] / "calibration.txt", calibration_samples=0,
                                    evaluation=case["work"] / "unseen.txt", recover=recover, show_progress=False,
                                    **extra))  # type: ignore[arg-type]
    return {"report": result.report, "dir": result.version_dir}


def test_recovery_keeps_2_4_trains_norms_and_is_deterministic(encoder: dict, recovered: dict) -> None:
    first, again = recovered, run(encoder, "b", RECOVER)
    assert (first["dir"] / WEIGHTS_FILE).read_bytes() == (again["dir"] / WEIGHTS_FILE).read_bytes()
    stored = load_weights(first["dir"] / WEIGHTS_FILE)
    assert len(stored.sparse) == 12 and all(is_2_4(stored.tensors[n]) for n in stored.sparse)
    dense = load_file(str(encoder["dir"] / "model.safetensors"))
    norm = "encoder.layer.0.attention.output.LayerNorm.weight"
    assert not torch.equal(stored.tensors[f"model.{norm}"], dense[norm])  # LayerNorm was trained
    assert first["report"]["distillation_loss"]["model"]  # the whole-model pass ran
    for unit, losses in first["report"]["distillation_loss"].items():
        assert losses[-1] < losses[0], (unit, losses)


@pytest.fixture(scope="module")
def plain(encoder: dict) -> dict:
    return run(encoder, "plain", None, keep_dense=2)


@pytest.fixture(scope="module")
def recovered(encoder: dict) -> dict:
    return run(encoder, "a", RECOVER)


def test_recovery_improves_agreement_on_unseen_lines(plain: dict, recovered: dict) -> None:
    """Plain: 2:4 of the 10 layers --keep-dense 2 leaves; recovered: all 12 layers 2:4, and still closer."""
    before = plain["report"]["evaluation"]["outputs"]["last_hidden_state"]
    after = recovered["report"]["evaluation"]["outputs"]["last_hidden_state"]
    assert after["mean_cosine"] > before["mean_cosine"] + 0.5 * (1 - before["mean_cosine"]), (before, after)


def test_keep_dense_keeps_the_most_sensitive_layers_and_reports_the_bytes(encoder: dict, plain: dict) -> None:
    report = plain["report"]
    rows = [r for r in report["layers"] if r["sensitivity"] is not None]
    assert len(rows) == 12 and all(r["sensitivity"] >= 0 for r in rows)
    ranked = sorted(rows, key=lambda r: -r["sensitivity"])
    kept = [r for r in report["layers"] if r["reason"].endswith("(--keep-dense)")]
    assert {r["name"] for r in kept} == {r["name"] for r in ranked[:2]} and not any(r["sparse"] for r in kept)
    assert report["keep_dense"]["layers"] == [r["name"] for r in kept]
    two_four = sum(r["shape"][0] * r["shape"][1] // 2 * 4 + r["shape"][0] * r["shape"][1] // 8 for r in kept)
    assert report["keep_dense"]["extra_bytes"] == sum(r["dense_bytes"] for r in kept) - two_four
    assert report["totals"]["sparse_layers"] == 10
    with pytest.raises(ValueError, match="--keep-dense must be 0 or more"):
        run(encoder, "bad", None, keep_dense=-1)  # refused before pruning


def test_report_carries_coverage_and_the_evaluation_note(plain: dict) -> None:
    report = plain["report"]
    cover = report["calibration"]["coverage"]
    assert cover["samples"] == 20 and cover["distinct_tokens"] > 20 and cover["warnings"]
    assert 0 < cover["evaluation_tokens_seen"] <= 1
    assert "overstates" in report["evaluation"]["note"]
