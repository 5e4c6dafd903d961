# syntax=docker/dockerfile:1
# twofour server image. One file, two variants chosen by a build argument:
#   docker build --build-arg VARIANT=cpu -t twofour:0.1.0-cpu .   python slim base + CPU torch
#   docker build --build-arg VARIANT=gpu -t twofour:0.1.0-gpu .   official PyTorch CUDA runtime base, its torch kept
# Each variant installs into /opt/venv in a build stage and copies only that venv into the final stage, so no
# build tree, pip cache or compiler reaches the image (every dependency is a wheel; none of the bases has gcc).
# No Docker engine exists on the project's machines: CI lints this file with hadolint and checks that every COPY
# source is in the repository and not excluded by .dockerignore (tests/deploy/test_dockerfile.py).

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Any PyTorch >= 2.5 CUDA *runtime* image works; keep its CUDA at or below the nodes' driver.
ARG GPU_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime

# ---------------------------------------------------------------- native gRPC front (C++, CPU variant)
# Debian bookworm's gRPC 1.51, the same distribution as the CPU runtime stage, which installs only its libraries.
# Versions unpinned on purpose (DL3008): bookworm's security updates change the Debian revision, not the API.
FROM ${PYTHON_IMAGE} AS build-native
WORKDIR /src/native
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ pkg-config libgrpc++-dev \
    && rm -rf /var/lib/apt/lists/*
COPY native/build.sh ./
COPY native/grpc_front ./grpc_front
RUN bash build.sh

# ---------------------------------------------------------------- CPU
FROM ${PYTHON_IMAGE} AS build-cpu
# Where pip looks: PyPI plus PyTorch's CPU index, which serves torch 2.13.0+cpu. constraints-cpu.txt pins
# torch==2.13.0, which PyPI's default (CUDA) build would satisfy too, so that index is what keeps the image free
# of CUDA libraries. A builder whose pip resolves elsewhere (a mirror, local indexes or wheels, a proxy's CA)
# passes its own pip configuration instead, as the build secret pip.conf (and its CA bundle as pip-cert; make
# image-check does: deploy/pip_sources.py). Secrets are mounted for this one RUN only and reach no layer.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints-cpu.txt ./
COPY server ./server
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-cert \
    if [ -f /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; \
    else export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints-cpu.txt . \
    && /opt/venv/bin/python -c "import torch; assert torch.version.cuda is None, 'CPU image got CUDA torch'"

FROM ${PYTHON_IMAGE} AS runtime-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgrpc++1.51 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /opt/venv /opt/venv
# On PATH, so the default --grpc-frontend auto serves gRPC through it.
COPY --from=build-native /src/native/build/twofour-grpc-front /usr/local/bin/twofour-grpc-front

# ---------------------------------------------------------------- GPU
FROM ${GPU_IMAGE} AS build-gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# --system-site-packages: the base's CUDA torch stays where it is and satisfies the package's torch requirement.
RUN python -m venv --system-site-packages /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints-cpu.txt ./
COPY server ./server
# Pin torch to exactly the base's build (so pip can only fail, never swap it for another torch) and keep the
# project's other pins from constraints-cpu.txt.
RUN python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > /tmp/torch-base.txt \
    && grep -v '^torch==' constraints-cpu.txt > /tmp/constraints-gpu.txt \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        -c /tmp/torch-base.txt -c /tmp/constraints-gpu.txt . \
    && /opt/venv/bin/python -c "import torch; assert torch.version.cuda, 'GPU image lost CUDA torch'" \
    && rm /tmp/torch-base.txt /tmp/constraints-gpu.txt

FROM ${GPU_IMAGE} AS runtime-gpu
COPY --from=build-gpu /opt/venv /opt/venv
# No native gRPC front here: the PyTorch base is another distribution, whose gRPC the front was not built against.
# --grpc-frontend auto serves through the Python front; a GPU pod's CPU is rarely what limits it.

# ---------------------------------------------------------------- final (either variant)
# DL3006 (untagged image) does not apply: runtime-${VARIANT} names one of this file's stages, not an image.
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS final
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TWOFOUR_MODEL_REPOSITORY=/models
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 twofour \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin twofour
# The bundled example repository, owned by root and so read-only to the server; mount yours over /models.
COPY model_repo /models
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001 8002
# Ready (200) only once the startup loads finished and until a SIGTERM drain begins; python, as the slim base
# has no curl. It follows TWOFOUR_HTTP_PORT (a port given as a flag instead is not seen here).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('TWOFOUR_HTTP_PORT', '8000'), timeout=2)"]
# Exec form: the server is PID 1 and receives SIGTERM itself (it installs its own handler and drains).
ENTRYPOINT ["twofour", "serve"]
CMD ["--model-repository", "/models"]
