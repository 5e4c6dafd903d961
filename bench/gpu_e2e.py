"""bench/gpu.py part (b): served throughput of a BERT-size encoder, dense vs 2:4, through the real server.

Builds and converts the model here (no downloads): `blocks` residual MLP blocks hidden -> 4*hidden -> hidden,
every linear pruned 2:4. The repository holds the same pruned weights twice: `enc_dense` (stored dense, so the
runtime serves plain fp16 GEMMs) and `enc_24` (stored 2:4, so the runtime measures and picks per layer). One
`twofour serve --device cuda` serves both; one tritonclient gRPC client sends one request at a time of `batch`
rows, so the time is the served latency of that batch size and throughput = batch / median latency. The two
models take turns request by request.
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# What `twofour serve` and this client import (the lent GPU machine lacks several unless carried as wheels, see
# bench/RESULTS.md); server.app last catches anything this list forgot.
NEEDED = ("grpc", "safetensors", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "httptools",
          "orjson", "grpc_health.v1", "tritonclient.grpc", "server.app")


def missing() -> list[str]:
    """Names that do not import here (really imported: a package present without its dependencies counts)."""
    out = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name)
    return out


def _request(x: np.ndarray) -> object:
    import tritonclient.grpc as grpcclient

    name, datatype = ("TOKENS", "INT64") if x.dtype == np.int64 else ("X", "FP32")
    request = grpcclient.InferInput(name, list(x.shape), datatype)
    request.set_data_from_numpy(x)
    return request


def _median_latencies(client: object, models: tuple[str, ...], x: np.ndarray, seconds: float) -> list[float]:
    """Median served latency per model, the models taking turns request by request for `seconds` in all, so that
    the machine's drift hits them alike (timing one model after the other invented a 10% gap on the H200)."""
    request = _request(x)
    for model in models:
        for _ in range(3):
            client.infer(model, [request])  # type: ignore[attr-defined]
    samples: list[list[float]] = [[] for _ in models]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples[0]) < 5:
        for i, model in enumerate(models):
            start = time.perf_counter()
            client.infer(model, [request])  # type: ignore[attr-defined]
            samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def _report(url: str) -> None:
    """The sparse model's decision table, from the server's own SparsityService (what operators will see)."""
    import grpc
    from google.protobuf import json_format

    from server.proto import sparsity_pb2 as pb
    from server.proto import sparsity_pb2_grpc as pb_grpc
    from server.runtime.gpu_decision import format_table

    with grpc.insecure_channel(url) as channel:
        report = pb_grpc.SparsityServiceStub(channel).ModelSparsity(pb.ModelSparsityRequest(name="enc_24"), timeout=30)
    for version in report.versions:
        details = json_format.MessageToDict(version.details)
        print(f"decision table of enc_24 v{version.version} ({version.device}, {version.dtype}, "
              f"mode {details.get('mode')}, backend {details.get('backend')}); 2:4 weight bytes ratio "
              f"{details.get('sparse_weight_ratio')}; load {details.get('load_seconds')}; cuda graphs "
              f"{details.get('cuda_graphs')}")
        first = [layer for layer in details.get("layers", []) if ".0." in layer["layer"]]  # blocks repeat
        print(format_table(first))
        print(f"whole-model check per bucket: {details.get('bucket_check')}")


def run(smoke: bool, hidden: int, blocks: int, seconds: float, keep_dense: bool, sequence: int = 0) -> None:
    """`sequence` > 0: each request is that many token ids (embedding, blocks, mean pool), so a batch of n
    requests is n x sequence rows per GEMM; 0: each request is one hidden-size vector (one row)."""
    if smoke:
        hidden, blocks, sequence = 64, 2, min(sequence, 8)
    shape = f"{sequence} tokens -> " if sequence else ""
    print(f"\n(b) served throughput, encoder {shape}{blocks} x ({hidden} -> {4 * hidden} -> {hidden}), "
          f"mode {'dispatch' if keep_dense else 'memory'}, one request in flight")
    lacking = missing()
    if lacking:
        print(f"SKIPPED: the server's dependencies are not importable here: {', '.join(lacking)}")
        return
    import tritonclient.grpc as grpcclient

    from tests.gpu.models import EncoderMLP, TokenEncoder, write_encoder, write_token_encoder
    from tests.support.server import ServerProcess

    with tempfile.TemporaryDirectory(prefix="twofour-bench-") as tmp:
        root = Path(tmp)
        if sequence:
            tokens = TokenEncoder(hidden, blocks, vocab=1000 if smoke else 30522)
            for name, sparse in (("enc_dense", False), ("enc_24", True)):
                write_token_encoder(root, name, tokens, hidden, sequence, max_batch=BATCHES[-1], sparse=sparse)
        else:
            model = EncoderMLP(hidden, blocks)
            write_encoder(root, "enc_dense", model, hidden, max_batch=BATCHES[-1], sparse=False)
            write_encoder(root, "enc_24", model, hidden, max_batch=BATCHES[-1], sparse=True)

        def sample(batch: int) -> np.ndarray:
            if sequence:
                return rng.integers(0, 1000, (batch, sequence), dtype=np.int64)
            return rng.standard_normal((batch, hidden)).astype(np.float32)
        flags = ["--device", "cpu" if smoke else "cuda"] + (["--gpu-keep-dense"] if keep_dense else [])
        started = time.perf_counter()
        server = ServerProcess(root, *flags, timeout=600)
        print(f"server ready in {time.perf_counter() - started:.1f}s (load includes the per-layer measurement)")
        try:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            rng = np.random.default_rng(0)
            check = sample(8)
            outputs = [client.infer(name, [_request(check)]).as_numpy("Y") for name in ("enc_dense", "enc_24")]
            err = float(np.linalg.norm(outputs[1] - outputs[0]) / np.linalg.norm(outputs[0]))
            print(f"served 2:4 vs served dense, batch 8: relative error {err:.2e} ({'ok' if err <= 1e-2 else 'FAIL'})")
            print(f"{'batch':>6} {'dense ms':>9} {'2:4 ms':>9} {'dense rows/s':>13} {'2:4 rows/s':>11} {'speedup':>8}")
            for batch in BATCHES:
                x = sample(batch)
                dense, sparse = _median_latencies(client, ("enc_dense", "enc_24"), x, 2 * seconds)
                print(f"{batch:>6} {dense * 1e3:>9.2f} {sparse * 1e3:>9.2f} {batch / dense:>13.0f} "
                      f"{batch / sparse:>11.0f} {dense / sparse:>7.2f}x")
            print("targets: never slower than dense at any batch; >= 1.15x at batch >= 64")
            _report(server.grpc_url)
        finally:
            code = server.stop()
            if code != 0:
                print(f"server exited with {code}; its log:\n{server.output()[-4000:]}")
