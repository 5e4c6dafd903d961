#!/usr/bin/env sh
# Regenerate server/proto/sparsity_pb2*.py from proto/sparsity.proto (run from anywhere; needs grpcio-tools).
# The include mapping `server/proto=proto` makes the generated gRPC module import `server.proto.sparsity_pb2`,
# so the package imports work without touching sys.path. tests/unit/test_proto_sync.py runs the same command.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-.}"  # the sync test generates into a temporary directory and compares
"$PYTHON" -m grpc_tools.protoc -Iserver/proto=proto --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  proto/sparsity.proto
