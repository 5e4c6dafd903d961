"""The committed generated code in server/proto/ is exactly what proto/generate.sh makes from proto/*.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("sparsity_pb2.py", "sparsity_pb2.pyi", "sparsity_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    result = subprocess.run(["sh", str(ROOT / "proto" / "generate.sh")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        fresh = (tmp_path / "server" / "proto" / name).read_text()
        committed = (ROOT / "server" / "proto" / name).read_text()
        assert fresh == committed, f"server/proto/{name} is stale: run proto/generate.sh and commit the result"


def test_the_service_is_ours_not_kserves() -> None:
    from server.proto import sparsity_pb2

    service = sparsity_pb2.DESCRIPTOR.services_by_name["SparsityService"]
    assert service.full_name == "twofour.v1.SparsityService"
    assert [m.name for m in service.methods] == ["ModelSparsity"]
