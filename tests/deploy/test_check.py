"""deploy/check.py (run by deploy/validate.sh) passes the shipped manifests and fails each kind of mistake."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, KSERVE_FILES, Doc, find


def load_checker() -> ModuleType:
    pytest.importorskip("kubernetes_validate", reason="pip install -r deploy/requirements-validate.txt")
    spec = importlib.util.spec_from_file_location("deploy_check", DEPLOY / "check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = load_checker()


def findings(docs: list[Doc], tmp_path: Path) -> list[str]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    count, found = check.check_files([path])
    assert count == len(docs)
    return found


def test_shipped_manifests_have_no_findings(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    for name, docs in rendered.items():
        assert findings(docs, tmp_path) == [], name
    count, found = check.check_files(KSERVE_FILES)
    assert count == 3 and found == []


def test_main_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main([str(p) for p in KSERVE_FILES]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: http}]}\n")
    assert check.main([str(bad)]) == 1
    assert "1 findings" in capsys.readouterr().out


def mutated(docs: list[Doc], kind: str) -> tuple[list[Doc], Doc]:
    docs = copy.deepcopy(docs)
    return docs, find(docs, kind)


def test_builtin_typo_is_a_finding(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    docs, deployment = mutated(rendered["cpu"], "Deployment")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    (finding,) = findings(docs, tmp_path)
    assert "readinessProbe" in finding and "periodSecond" in finding


def test_unknown_kinds_are_findings(tmp_path: Path) -> None:
    docs = [{"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "x"}},
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "y"}}]
    found = findings(docs, tmp_path)
    assert len(found) == 2 and "Couldn't find schema" in found[0] and "no schema" in found[1]


def test_servicemonitor_needs_endpoints(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    docs, monitor = mutated(rendered["cpu"], "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    del monitor["spec"]["selector"]
    found = findings(docs, tmp_path)
    assert any("'selector' is a required property" in f for f in found)
    assert any("intervall" in f for f in found)


def test_serving_runtime_container_is_checked_as_kubernetes(tmp_path: Path) -> None:
    runtime_file = DEPLOY / "kserve" / "clusterservingruntime.yaml"
    docs = [yaml.safe_load(runtime_file.read_text())]
    runtime = docs[0]
    runtime["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [8080]
    runtime["spec"]["protocolVersions"].append("v3")
    found = findings(docs, tmp_path)
    assert any("as a Pod" in f and "livenessProbe" in f for f in found)
    assert any("'v3' is not one of" in f for f in found)


def test_inference_service_fields_are_checked(tmp_path: Path) -> None:
    docs = [yaml.safe_load((DEPLOY / "kserve" / "inferenceservice.yaml").read_text())]
    model = docs[0]["spec"]["predictor"]["model"]
    model["storageUri"] = "/local/path"
    model["resourcess"] = {}
    found = findings(docs, tmp_path)
    assert any("storageUri" in f and "does not match" in f for f in found)
    assert any("as a Pod" in f and "resourcess" in f for f in found)
