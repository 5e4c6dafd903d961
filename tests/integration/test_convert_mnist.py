"""MNIST end to end: train an MLP on real digits -> export -> `twofour convert` with each method -> serve ->
tritonclient accuracy equals the pruned torch model's exactly; one-shot methods stay within 1.0 point of dense,
SparseGPT with --recover (refit + distillation, as the bundled model is built) within 0.3 points."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from server.artifacts import load_weights
from server.cli import main as cli_main
from server.convert import bundled
from server.convert.pipeline import ConversionRejected, ConvertOptions, convert
from server.repository import CONFIG_FILE, PROGRAM_FILE, REPORT_FILE, WEIGHTS_FILE, read_config
from server.sparsity import is_2_4
from tests.support.server import ROOT, ServerProcess

METHODS = ("magnitude", "wanda", "sparsegpt")
RECOVER_FLAGS = ["--recover", "--recover-steps", "600", "--recover-lr", "1e-3", "--augment", "0"]  # bundled's
WITHIN = {"magnitude": 1.0, "wanda": 1.0, "sparsegpt": 0.3}  # points of accuracy from dense


def options(case: dict, repo: Path, method: str, **extra: object) -> ConvertOptions:
    settings: dict = {"calibration_samples": 256, "show_progress": False, **extra}
    return ConvertOptions(source=case["work"] / "mlp.pt2", name=f"mnist_{method}", output_repository=repo,
                          calibration=case["calibration"], evaluation=case["evaluation"], method=method, **settings)


@pytest.fixture(scope="module")
def converted(mnist_case: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    repo = tmp_path_factory.mktemp("repo")
    reports = {}
    for method in METHODS[:2]:
        reports[method] = convert(options(mnist_case, repo, method)).report
    # The third goes through the real command line.
    code = cli_main(["convert", str(mnist_case["work"] / "mlp.pt2"), "--name", "mnist_sparsegpt",
                     "--output-repository", str(repo), "--calibration", str(mnist_case["calibration"]),
                     "--calibration-samples", "256", "--evaluation", str(mnist_case["evaluation"]), "--quiet",
                     *RECOVER_FLAGS])
    assert code == 0
    reports["sparsegpt"] = json.loads((repo / "mnist_sparsegpt" / "1" / REPORT_FILE).read_text())
    return {"repo": repo, "reports": reports}


@pytest.fixture(scope="module")
def server(converted: dict) -> Iterator[ServerProcess]:
    process = ServerProcess(converted["repo"])
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float((logits.argmax(axis=1) == labels).mean())


def pruned_torch_model(case: dict, version_dir: Path) -> torch.nn.Module:
    """The trained eager MLP with the stored (decompressed) weights: the reference the server must match."""
    model = bundled.MnistMlp()
    model.load_state_dict(load_weights(version_dir / WEIGHTS_FILE).tensors)
    return model.eval()


def served_logits(server: ServerProcess, model: str, pixels: np.ndarray, protocol: str) -> np.ndarray:
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
    out = []
    for start in range(0, len(pixels), 64):
        chunk = np.ascontiguousarray(pixels[start:start + 64])
        tensor = module.InferInput("pixels", list(chunk.shape), "FP32")
        tensor.set_data_from_numpy(chunk)
        out.append(client.infer(model, [tensor]).as_numpy("output"))
    client.close()
    return np.concatenate(out)


@pytest.mark.parametrize("method", METHODS)
def test_served_accuracy_equals_pruned_torch_and_is_close_to_dense(
        method: str, mnist_case: dict, converted: dict, server: ServerProcess) -> None:
    version_dir = converted["repo"] / f"mnist_{method}" / "1"
    weights = load_weights(version_dir / WEIGHTS_FILE)
    assert weights.sparse == {"fc1.weight", "fc2.weight"}  # the head stays dense by default
    assert all(is_2_4(weights.tensors[n]) for n in weights.sparse)
    x, y = mnist_case["test_x"], mnist_case["test_y"]
    with torch.no_grad():
        dense_logits = mnist_case["model"](torch.from_numpy(x)).numpy()
        pruned_logits = pruned_torch_model(mnist_case, version_dir)(torch.from_numpy(x)).numpy()
    dense, pruned = accuracy(dense_logits, y), accuracy(pruned_logits, y)
    for protocol in ("grpc", "http"):
        assert accuracy(served_logits(server, f"mnist_{method}", x, protocol), y) == pruned
    assert abs(dense - pruned) <= WITHIN[method], (dense, pruned)
    report = converted["reports"][method]
    assert report["evaluation"]["accuracy"] == pytest.approx(pruned, abs=1e-3)
    assert report["evaluation"]["dense_accuracy"] == pytest.approx(dense, abs=1e-3)
    agreement = float((dense_logits.argmax(axis=1) == pruned_logits.argmax(axis=1)).mean())  # evaluation = x
    assert report["evaluation"]["top1_agreement"] == pytest.approx(agreement, abs=1e-6)
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["fc1"]["sparse"] and rows["fc1"]["fraction_zero"] >= 0.5 and rows["fc1"]["method"] == method
    assert not rows["head"]["sparse"] and "output head" in rows["head"]["reason"]
    assert 0 < rows["fc2"]["relative_output_error"] < 1
    assert report["totals"]["stored_bytes"] < report["totals"]["dense_bytes"]


def test_report_records_the_versions_that_made_it(converted: dict) -> None:
    expected = {"torch": torch.__version__, "twofour": importlib.metadata.version("twofour"),
                "python": platform.python_version()}
    for method in METHODS:  # sparsegpt's report is the sparsity.json the command line wrote
        assert converted["reports"][method]["versions"] == expected, method


def test_sparsegpt_has_lower_layer_error_than_magnitude(converted: dict) -> None:
    errors = {m: {r["name"]: r["relative_output_error"] for r in converted["reports"][m]["layers"] if r["sparse"]}
              for m in METHODS}
    assert errors["sparsegpt"]["fc2"] < errors["magnitude"]["fc2"]


def repository_files(model_dir: Path) -> dict[str, bytes]:
    """Every file of a converted model (config.pbtxt and the whole version directory), by relative path."""
    return {str(p.relative_to(model_dir)): p.read_bytes() for p in sorted(model_dir.rglob("*")) if p.is_file()}


def test_conversion_is_byte_identical(mnist_case: dict, converted: dict, tmp_path: Path) -> None:
    again = convert(options(mnist_case, tmp_path, "wanda"))
    first = repository_files(converted["repo"] / "mnist_wanda")
    assert set(first) == {CONFIG_FILE, f"1/{PROGRAM_FILE}", f"1/{WEIGHTS_FILE}", f"1/{REPORT_FILE}"}
    assert repository_files(again.version_dir.parent) == first  # sparsity.json included: it holds no wall time
    assert again.seconds > 0 and "seconds" not in json.dumps(again.report)


def test_conversion_in_another_process_is_byte_identical(mnist_case: dict, converted: dict, tmp_path: Path) -> None:
    """A fresh process (new hash seed, new allocator state) running the same command writes the same bytes as the
    fixture's in-process run; torch.export's archive id is a checksum of its records, so program.pt2 agrees too."""
    result = subprocess.run(
        [sys.executable, "-m", "server", "convert", str(mnist_case["work"] / "mlp.pt2"), "--name", "mnist_sparsegpt",
         "--output-repository", str(tmp_path), "--calibration", str(mnist_case["calibration"]),
         "--calibration-samples", "256", "--evaluation", str(mnist_case["evaluation"]), "--quiet", *RECOVER_FLAGS],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert re.search(r"took \d+\.\d s", result.stdout), result.stdout  # the wall time is printed, not stored
    assert repository_files(tmp_path / "mnist_sparsegpt") == repository_files(converted["repo"] / "mnist_sparsegpt")


def test_accuracy_gate_rejects_and_writes_nothing(mnist_case: dict, converted: dict, tmp_path: Path) -> None:
    drop = converted["reports"]["magnitude"]["evaluation"]["drop"]
    with pytest.raises(ConversionRejected, match="max-accuracy-drop"):
        convert(options(mnist_case, tmp_path, "magnitude", max_accuracy_drop=drop - 0.05))
    assert list(tmp_path.iterdir()) == []
    passed = convert(options(mnist_case, tmp_path, "magnitude", max_accuracy_drop=drop + 0.05))
    assert passed.version_dir == tmp_path / "mnist_magnitude" / "1"


def test_next_version_and_existing_version(mnist_case: dict, converted: dict, tmp_path: Path) -> None:
    first = convert(options(mnist_case, tmp_path, "magnitude", calibration_samples=32)).version_dir
    second = convert(options(mnist_case, tmp_path, "magnitude", calibration_samples=32)).version_dir
    assert (first.name, second.name) == ("1", "2")
    with pytest.raises(ValueError, match="already has version 2"):
        convert(options(mnist_case, tmp_path, "magnitude", version=2))


def test_only_and_skip_select_layers(mnist_case: dict, tmp_path: Path) -> None:
    report = convert(options(mnist_case, tmp_path, "magnitude", skip=["fc1"])).report
    assert [r["name"] for r in report["layers"] if r["sparse"]] == ["fc2"]
    report = convert(options(mnist_case, tmp_path, "magnitude", only=["fc1"])).report
    reasons = {r["name"]: r["reason"] for r in report["layers"]}
    assert reasons == {"fc1": "", "fc2": "not matched by --only", "head": "not matched by --only"}


def test_cli_flags_reach_the_repository(mnist_case: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["convert", str(mnist_case["work"] / "mlp.pt2"), "--name", "flags", "--output-repository",
                     str(tmp_path), "--calibration", str(mnist_case["calibration"]), "--calibration-samples", "32",
                     "--method", "magnitude", "--no-dynamic-batching", "--max-batch-size", "8", "--skip", "fc2",
                     "--version", "3", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    config = read_config(tmp_path / "flags", "flags")
    assert config.max_batch_size == 8 and not config.HasField("dynamic_batching")
    assert load_weights(tmp_path / "flags" / "3" / WEIGHTS_FILE).sparse == {"fc1.weight"}
    report = json.loads((tmp_path / "flags" / "3" / REPORT_FILE).read_text())
    assert report["method"] == "magnitude" and report["calibration"]["samples"] == 32
    assert re.search(r"took \d+\.\d s", out) and "fc2" in out and "matched by --skip" in out


def test_cli_reports_bad_input_clearly(mnist_case: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((4, 784), np.float32))
    code = cli_main(["convert", str(mnist_case["work"] / "mlp.pt2"), "--name", "m", "--output-repository",
                     str(tmp_path / "repo"), "--calibration", str(bad), "--quiet"])
    assert code == 1
    assert "lacks arrays ['pixels']" in capsys.readouterr().err
    code = cli_main(["convert", str(tmp_path), "--name", "m", "--output-repository", str(tmp_path / "repo"),
                     "--calibration", str(bad), "--quiet"])
    assert code == 1
    assert "expected a torch.export program (.pt2) or a Hugging Face model directory" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "m").exists()


def test_inspect_shows_config_layers_and_report(converted: dict, server: ServerProcess,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["inspect", str(converted["repo"] / "mnist_sparsegpt"), "--url", f"http://{server.http_url}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'backend: "twofour"' in out and "fc1.weight" in out and "2:4" in out and "sparsegpt" in out
    assert "accuracy: dense" in out and "live report" in out and '"sparse_layers"' in out
