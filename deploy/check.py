"""Validate Kubernetes manifests offline; prints one line per finding and exits 1 if there is any.

Built-in kinds go through kubernetes-validate with strict schemas (unknown fields are errors) for a pinned
Kubernetes version. kubernetes-validate only knows built-in kinds and merely *warns* on the others, so the custom
resources this project ships are checked here: their own required fields and enums (a schema written from the
CRDs, deploy/schemas/), and the Kubernetes objects embedded in them (KServe containers and pod fields) strictly as
the built-in types they are, by wrapping them in a Pod. A kind that is neither built-in nor known here is a finding:
nothing passes unchecked.

    python deploy/check.py [--kubernetes-version 1.33.0] FILE...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
DEFAULT_KUBERNETES_VERSION = "1.33.0"

# KServe fields layered on top of a core/v1 Container (model) and a core/v1 PodSpec (predictor); everything else
# in those objects must be valid Kubernetes.
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri", "storage"}
KSERVE_PREDICTOR_FIELDS = {"model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
                           "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
                           "deploymentStrategy", "autoScaling"}
# ServingRuntime spec fields that are copied onto the pod spec as they are.
RUNTIME_POD_FIELDS = {"nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets"}


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document in `path` (a rendered kustomization or a plain manifest file)."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def is_builtin(api_version: str) -> bool:
    """Core groups have no dot (`v1`, `apps/v1`); the others built in end with `.k8s.io`."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def validate_builtin(doc: dict[str, Any], version: str, where: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "<root>"
        return [f"{where}: {path}: {short(exc.message)}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        return [f"{where}: {exc.message}"]
    return []


def short(message: str, limit: int = 240) -> str:
    """jsonschema quotes the whole offending object; keep a finding to one readable line."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def validate_schema(doc: dict[str, Any], schema_file: str, where: str) -> list[str]:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{where}: {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {short(e.message)}" for e in errors]


def as_pod(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


def check_serving_runtime(doc: dict[str, Any], version: str, where: str) -> list[str]:
    findings = validate_schema(doc, "servingruntime.json", where)
    spec = doc.get("spec") or {}
    pod = {key: spec[key] for key in RUNTIME_POD_FIELDS if key in spec}
    pod["containers"] = spec.get("containers") or []
    return findings + validate_builtin(as_pod(pod, "runtime"), version, f"{where} (containers as a Pod)")


def check_inference_service(doc: dict[str, Any], version: str, where: str) -> list[str]:
    findings = validate_schema(doc, "inferenceservice.json", where)
    predictor = ((doc.get("spec") or {}).get("predictor")) or {}
    model = predictor.get("model") or {}
    container = {"name": "kserve-container", "image": "runtime-image"}
    container.update({k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS})
    pod = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
    pod["containers"] = [container, *pod.get("containers", [])]
    return findings + validate_builtin(as_pod(pod, "predictor"), version, f"{where} (predictor as a Pod)")


def check_document(doc: dict[str, Any], version: str, source: str) -> list[str]:
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return [f"{source}: a document without apiVersion/kind"]
    where = f"{source}: {name_of(doc)}"
    api_version, kind = doc["apiVersion"], doc["kind"]
    if is_builtin(api_version):
        return validate_builtin(doc, version, where)
    if api_version.startswith("monitoring.coreos.com/") and kind == "ServiceMonitor":
        return validate_schema(doc, "servicemonitor.json", where)
    if api_version.startswith("serving.kserve.io/") and kind in {"ServingRuntime", "ClusterServingRuntime"}:
        return check_serving_runtime(doc, version, where)
    if api_version.startswith("serving.kserve.io/") and kind == "InferenceService":
        return check_inference_service(doc, version, where)
    return [f"{where}: no schema for {api_version} {kind} (add one to deploy/schemas and deploy/check.py)"]


def check_files(paths: Iterable[Path], version: str = DEFAULT_KUBERNETES_VERSION) -> tuple[int, list[str]]:
    """(manifests checked, findings) over every document of every file."""
    count, findings = 0, []
    for path in paths:
        try:
            documents = load_documents(path)
        except (OSError, yaml.YAMLError) as exc:
            findings.append(f"{path}: unreadable: {exc}")
            continue
        if not documents:
            findings.append(f"{path}: no manifests")
        count += len(documents)
        for doc in documents:
            findings.extend(check_document(doc, version, str(path)))
    return count, findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    count, findings = check_files(args.files, args.kubernetes_version)
    for finding in findings:
        print(finding)
    print(f"deploy/check.py: {count} manifests, {len(findings)} findings (Kubernetes {args.kubernetes_version})")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
