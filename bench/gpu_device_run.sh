#!/usr/bin/env bash
# The one-shot GPU check for a task lent a GPU machine (15 min of device time, all tries together). Prepare on the
# dev machine first (CPU), then make ONE device call, e.g.
#     bash bench/gpu_wheels.sh                      # here: server deps as cp312 wheels into .whl/ (optional)
#     run(command="bash bench/gpu_device_run.sh", carry=[".whl"], timeout_s=540)
# What it does there: records the environment; installs carried .whl/*.whl into /tmp/site (PYTHONPATH) if present;
# runs bench/gpu.py parts a,c,d (torch only), then parts b,e (skipped with the reason when the server's deps are
# missing), then bench/gpu_fp8.py (issue 18: FP8/fp16 dense vs 2:4 per layer, GPU bytes, the BERT-large-size
# encoder end to end), then tests/gpu when pytest imports; each step under its own timeout so a hang cannot eat
# the others. Outputs land in $OUT (env.txt, bench_acd.txt, bench_b.txt, bench_fp8.txt, tests.txt, tests.xml,
# summary.txt): at most 8 files. FP8_ONLY=1 runs only the FP8 step and the tests (a second, shorter try).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/twofour-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T_FP8=${T_FP8:-270}  # seconds per step; together (plus ~30 s of setup) under one command's 600 s
T_ACD=${T_ACD:-90}
T_B=${T_B:-90}
T_TESTS=${T_TESTS:-100}
FP8_ONLY=${FP8_ONLY:-0}
started=$SECONDS

{
  echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
  "$PY" - <<'PYEOF'
import sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE",
      "| capability", torch.cuda.get_device_capability(0) if torch.cuda.is_available() else "-")
cusparselt = getattr(torch.backends, "cusparselt", None)
print("cusparselt available:", bool(cusparselt and cusparselt.is_available()),
      "| version:", cusparselt.version() if cusparselt and cusparselt.is_available() else "-")
PYEOF
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl; then
      echo "wheels installed"
    else
      echo "WHEEL INSTALL FAILED: part (b) and the served tests will be skipped"
    fi
  else
    echo "no .whl/ carried: part (b) and the tests that need tritonclient/the server will be skipped"
  fi
} 2>&1 | tee "$OUT/env.txt"
[ -d /tmp/site ] && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS FILE COMMAND...: run with a timeout, tee its output, remember its exit code
  local name=$1 limit=$2 file=$3
  shift 3
  echo "== $name (limit ${limit}s): $*" | tee "$OUT/$file"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$file"
  local rc=${PIPESTATUS[0]}
  echo "== $name exit $rc$([ "$rc" = 124 ] && echo ' (TIMED OUT)')" | tee -a "$OUT/$file"
  RCS+=("$name=$rc")
}
RCS=()
step "bench fp8 f,g,h" "$T_FP8" bench_fp8.txt "$PY" bench/gpu_fp8.py --parts f,g,h  # the new numbers first
if [ "$FP8_ONLY" != 1 ]; then
  step "bench a,c,d" "$T_ACD" bench_acd.txt "$PY" bench/gpu.py --parts a,c,d
  step "bench b,e" "$T_B" bench_b.txt "$PY" bench/gpu.py --parts b,e
fi
if "$PY" -c "import pytest" 2>/dev/null; then
  step "tests/gpu" "$T_TESTS" tests.txt "$PY" -m pytest tests/gpu -q -rsP -p no:cacheprovider --junitxml="$OUT/tests.xml"
else
  echo "pytest is not importable: carry a pytest wheel in .whl/ (bench/RESULTS.md, GPU)" | tee "$OUT/tests.txt"
  RCS+=("tests/gpu=not-run")
fi

{
  echo "== summary ($((SECONDS - started)) s): ${RCS[*]}"
  grep -h -E "^device:|best ratio|^correctness|fp32 weight|SKIPPED|relative error|server ready|targets:|^total" \
    "$OUT/bench_acd.txt" "$OUT/bench_b.txt" 2>/dev/null
  grep -h -E "^device:|target|vs the faster dense|SKIPPED|could not load|^total" "$OUT/bench_fp8.txt" 2>/dev/null
  grep -h -E "(passed|failed|skipped|error|no tests ran)" "$OUT/tests.txt" 2>/dev/null | tail -5
} 2>&1 | tee "$OUT/summary.txt"
