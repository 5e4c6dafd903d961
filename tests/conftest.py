"""Test-wide defaults.

Servers started by tests run their CPU models in fp32 unless a test asks otherwise (`--cpu-precision`, or the
model's `cpu_precision` parameter, which wins): most tests compare served answers with the torch module at fp32
tolerances, and `auto` would also spend load time measuring candidates in every server a test starts. The tests
of the precision choice itself (tests/unit/runtime/test_cpu_*.py, tests/integration/test_cpu_precision_serving.py)
ask for it explicitly.
"""

from __future__ import annotations

import os

os.environ.setdefault("TWOFOUR_CPU_PRECISION", "fp32")
