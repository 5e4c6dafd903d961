#!/usr/bin/env bash
# Run HERE (the dev machine, which reaches PyPI) before the one device call: downloads, as CPython 3.12 x86-64
# wheels (the lent GPU machine's python3 is 3.12 with torch, grpcio, protobuf, numpy, safetensors, prometheus-client,
# anyio, h11, click, ml-dtypes, pytest), the server's dependencies that machine lacks, pinned to the versions tested
# in .venv, into .whl/ (git-ignored). bench/gpu_device_run.sh installs them there with pip --no-index --target.
# grpcio and protobuf travel too: server/proto was generated for grpcio >= 1.81.1 and protobuf >= 6.33.5.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PACKAGES=(fastapi starlette uvicorn httptools orjson pydantic pydantic-core pydantic-settings python-dotenv
          annotated-types annotated-doc typing-inspection typing-extensions opentelemetry-api
          grpcio grpcio-health-checking protobuf tritonclient python-rapidjson urllib3
          geventhttpclient gevent greenlet zope.event zope.interface brotli certifi)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
rm -rf .whl && mkdir .whl
pins=()
for name in "${PACKAGES[@]}"; do
  pins+=("$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
platforms=()
for tag in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 \
           manylinux_2_35 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${pins[@]}"
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/ (carry it: run(..., carry=[\".whl\"]))"
