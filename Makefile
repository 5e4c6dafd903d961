# The two commands of the README. Both set up .venv from the project's own files first (CPU torch pinned).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS := -q --disable-pip-version-check

NATIVE_FRONT := native/build/twofour-grpc-front

.PHONY: setup native serve lint test

setup: $(VENV)/.installed

## the native (C++) gRPC front process; installs its build dependencies with apt-get when run as root
native: $(NATIVE_FRONT)

$(NATIVE_FRONT): $(wildcard native/grpc_front/*.cc native/grpc_front/*.h) native/build.sh
	bash native/build.sh

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -c constraints-cpu.txt -e ".[test,convert]"
	touch $@

## serve the bundled model repository on :8000 (HTTP), :8001 (gRPC), :8002 (metrics); gRPC through the native
## front when it builds here, else the Python front (the server logs which)
serve: setup
	-@$(MAKE) --no-print-directory native || echo "make serve: no native gRPC front here; serving with the Python one"
	$(VENV)/bin/twofour serve --model-repository model_repo

## ruff (style, imports, likely bugs) and mypy (types); their settings are in pyproject.toml
lint: setup
	$(VENV)/bin/ruff check server tests bench
	$(PY) -m mypy

## lint, the whole test suite, then the deployment manifests' offline validation
# The whole suite runs with the default front (auto: the native one, built first, which serves gRPC and HTTP), then
# the gRPC integration modules once more with the Python front and once more inline, so every mode of the gRPC
# transport passes the same protocol, error, lifecycle, batching and shutdown-under-load tests; the HTTP modules run
# again with the Python front too, where uvicorn owns the public HTTP port.
GRPC_MODULES = tests/integration/test_grpc_protocol.py tests/integration/test_grpc_errors.py \
	tests/integration/test_lifecycle.py tests/integration/test_batching_server.py \
	tests/hardening/test_shutdown_under_load.py
HTTP_MODULES = tests/integration/test_http_protocol.py tests/integration/test_http_limits.py \
	tests/hardening/test_limits.py

test: setup native lint
	$(PY) -m pytest -q
	TWOFOUR_GRPC_FRONTEND=python $(PY) -m pytest -q -p no:cacheprovider $(GRPC_MODULES) $(HTTP_MODULES)
	TWOFOUR_GRPC_FRONTEND=inline $(PY) -m pytest -q -p no:cacheprovider $(GRPC_MODULES)
	@if [ -f deploy/validate.sh ]; then bash deploy/validate.sh; fi

## build the CPU image with podman from a base made here, run it, serve an inference, SIGTERM it (docs/deploy.md);
## as root, 10-20 minutes from scratch on 2 cores (~1.5 cached), so not part of `make test`
.PHONY: image-check
image-check: setup
	PYTHON=$(PY) bash deploy/image_check.sh
