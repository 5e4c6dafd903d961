"""`twofour convert --quantize fp8|int8` end to end on the bundled MNIST MLP: the stored format, the CPU server
answering exactly as the dequantized weights mean, the error the quantization step allows, bytes on disk, and
the accuracy guard measuring the quantized model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from server.artifacts import load_weights
from server.cli import main as cli_main
from server.convert import bundled
from server.convert.pipeline import ConversionRejected, ConvertOptions, convert
from server.repository import REPORT_FILE, WEIGHTS_FILE
from server.sparsity import decompress
from server.sparsity.quantize import STORAGE_DTYPE, max_abs_error
from tests.integration.test_convert_mnist import accuracy, served_logits
from tests.support.server import ServerProcess

SCHEMES = ("none", "fp8", "int8")
# The server and the reference run the same fp32 graph on the same weights; they differ only in reduction order
# (thread count, batch split). A dot product of K <= 784 terms has relative error <= K x 2^-24 ~ 5e-5 of
# sum |x||w|, which for these logits (|logit| ~ 10, sum |x||w| within ~10x of it) is far below 1e-3 absolute.
REDUCTION_ATOL = 1e-3


@pytest.fixture(scope="module")
def case(mnist_case: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work, test_x, test_y = mnist_case["work"], mnist_case["test_x"], mnist_case["test_y"]
    calibration, evaluation = mnist_case["calibration"], mnist_case["evaluation"]
    repo = tmp_path_factory.mktemp("mnist_q") / "repo"
    reports = {}
    for scheme in ("none", "fp8"):
        reports[scheme] = convert(ConvertOptions(
            source=work / "mlp.pt2", name=f"mnist_{scheme}", output_repository=repo, calibration=calibration,
            evaluation=evaluation, method="sparsegpt", calibration_samples=256, show_progress=False,
            quantize=scheme)).report
    code = cli_main(["convert", str(work / "mlp.pt2"), "--name", "mnist_int8", "--output-repository", str(repo),
                     "--calibration", str(calibration), "--calibration-samples", "256", "--evaluation",
                     str(evaluation), "--method", "sparsegpt", "--quantize", "int8", "--quiet"])
    assert code == 0
    reports["int8"] = json.loads((repo / "mnist_int8" / "1" / REPORT_FILE).read_text())
    return {"work": work, "repo": repo, "reports": reports, "test_x": test_x, "test_y": test_y,
            "calibration": calibration, "evaluation": evaluation}


@pytest.fixture(scope="module")
def server(case: dict) -> Iterator[ServerProcess]:
    process = ServerProcess(case["repo"])
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def version_dir(case: dict, scheme: str) -> Path:
    return case["repo"] / f"mnist_{scheme}" / "1"


def reference(case: dict, scheme: str) -> torch.nn.Module:
    model = bundled.MnistMlp()
    model.load_state_dict(load_weights(version_dir(case, scheme) / WEIGHTS_FILE).tensors)
    return model.eval()


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_stored_format(case: dict, scheme: str) -> None:
    raw = load_file(str(version_dir(case, scheme) / WEIGHTS_FILE))
    for layer, cols in (("fc1", 784), ("fc2", 512)):
        assert raw[f"{layer}.weight.values"].dtype == STORAGE_DTYPE[scheme]
        assert raw[f"{layer}.weight.values"].shape == (512, cols // 2)
        assert raw[f"{layer}.weight.mask"].shape == (512, cols // 8)
        assert raw[f"{layer}.weight.scale"].dtype == torch.float32 and raw[f"{layer}.weight.scale"].shape == (512,)
    assert raw["head.weight"].dtype == torch.float32 and "head.weight.scale" not in raw  # dense layers as they are
    quantization = case["reports"][scheme]["quantization"]
    assert quantization["scheme"] == scheme and set(quantization["layers"]) == {"fc1.weight", "fc2.weight"}
    assert case["reports"]["none"]["quantization"] is None


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_served_answers_equal_the_dequantized_reference(case: dict, server: ServerProcess, scheme: str) -> None:
    x = case["test_x"][:512]
    with torch.no_grad():
        expected = reference(case, scheme)(torch.from_numpy(x)).numpy()
    for protocol in ("grpc", "http"):
        served = served_logits(server, f"mnist_{scheme}", x, protocol)
        np.testing.assert_allclose(served, expected, rtol=0, atol=REDUCTION_ATOL)


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_first_layer_error_is_within_the_quantization_step(case: dict, scheme: str) -> None:
    """|x (Wq - W)^T| <= |x| E^T elementwise, E the format's per-entry half-step bound (sparsity/quantize.py):
    the quantized layer's pre-activation, on real digits, against the same 2:4 layer unquantized."""
    raw = load_file(str(version_dir(case, scheme) / WEIGHTS_FILE))
    exact = load_weights(version_dir(case, "none") / WEIGHTS_FILE).tensors["fc1.weight"]
    quantized = load_weights(version_dir(case, scheme) / WEIGHTS_FILE).tensors["fc1.weight"]
    mask = raw["fc1.weight.mask"]
    kept = exact[decompress(torch.ones(512, 392), mask).bool()].reshape(512, 392)
    bound = decompress(max_abs_error(kept, raw["fc1.weight.scale"], scheme), mask)
    x = torch.from_numpy(case["test_x"][:256]).double()
    error = (x @ (quantized.double() - exact.double()).T).abs()
    allowed = x.abs() @ bound.double().T
    assert bool((error <= allowed * (1 + 2.0**-20) + 1e-12).all())
    assert float(error.max()) > 0  # the quantized weights really differ from the exact ones


def test_quality_against_dense_and_unquantized_2_4(case: dict, server: ServerProcess) -> None:
    """The accuracy each repository serves, and the report's figures are of the quantized model."""
    x, y = case["test_x"], case["test_y"]
    served = {s: accuracy(served_logits(server, f"mnist_{s}", x, "grpc"), y) for s in SCHEMES}
    print(f"MNIST test accuracy served ({len(y)} digits):", served,
          "dense:", case["reports"]["none"]["evaluation"]["dense_accuracy"])
    for scheme in ("fp8", "int8"):
        assert abs(served[scheme] - served["none"]) <= 1.0, served  # quantization costs at most a point here
        evaluation = case["reports"][scheme]["evaluation"]
        with torch.no_grad():
            ref = accuracy(reference(case, scheme)(torch.from_numpy(x)).numpy(), y)
        assert evaluation["accuracy"] == pytest.approx(ref, abs=1e-3)


def test_fp8_layers_take_at_most_0_32_of_fp16_dense_bytes_on_disk(case: dict) -> None:
    path = version_dir(case, "fp8") / WEIGHTS_FILE
    raw = load_file(str(path))
    for layer, cols in (("fc1", 784), ("fc2", 512)):
        stored = sum(raw[f"{layer}.weight.{part}"].numel() * raw[f"{layer}.weight.{part}"].element_size()
                     for part in ("values", "mask", "scale"))
        ratio = stored / (512 * cols * 2)
        assert ratio == pytest.approx(0.3125 + 2 / cols) and ratio <= 0.32, (layer, ratio)
        row = next(r for r in case["reports"]["fp8"]["layers"] if r["name"] == layer)
        assert row["stored_bytes"] == stored


def test_accuracy_guard_measures_the_quantized_model(case: dict, tmp_path: Path) -> None:
    """The guard limits the drop of the model as written (dequantized; its accuracy is checked against the
    dequantized reference in test_quality_against_dense_and_unquantized_2_4): just under it rejects."""
    drop = case["reports"]["int8"]["evaluation"]["drop"]
    options = ConvertOptions(source=case["work"] / "mlp.pt2", name="guard", output_repository=tmp_path,
                             calibration=case["calibration"], evaluation=case["evaluation"], method="sparsegpt",
                             calibration_samples=256, show_progress=False, quantize="int8",
                             max_accuracy_drop=drop - 0.005)
    with pytest.raises(ConversionRejected, match=f"drop is {drop:.4f} points"):
        convert(options)
    assert list(tmp_path.iterdir()) == []
