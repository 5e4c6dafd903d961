"""The manifests configure the server that exists: its flags, its TWOFOUR_* settings, its ports and probe paths.

Every check reads the rendered manifests (what a cluster receives) and asks the server's own code (the
`twofour serve` argument parser and `Settings`) rather than a copy of its constants. test_live_probes.py then
asks a real server process the manifests' probe and scrape URLs.
"""

from __future__ import annotations

import pytest

from server.settings import Settings
from tests.deploy.manifests import OVERLAYS, Doc, MakeSettings, find, named_port, server_container, twofour_env

READY, LIVE = "/v2/health/ready", "/v2/health/live"
PROBE_PATHS = {"startupProbe": READY, "readinessProbe": READY, "livenessProbe": LIVE}


def listener_ports(settings: Settings) -> dict[int, str]:
    return {port: name for name, port in settings.enabled_listeners().items()}


def test_every_overlay_renders_the_server(rendered: dict[str, list[Doc]]) -> None:
    assert set(rendered) == {"cpu", "gpu"}
    for docs in rendered.values():
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                "ServiceMonitor"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_env_names_are_settings_fields(rendered: dict[str, list[Doc]], overlay: str) -> None:
    fields = {f"TWOFOUR_{name.upper()}" for name in Settings.model_fields}
    docs = rendered[overlay]
    configmap_keys = {k for d in docs if d["kind"] == "ConfigMap" for k in d["data"]}
    env = twofour_env(docs, server_container(docs))
    assert configmap_keys and env
    assert configmap_keys - fields == set(), "ConfigMap keys that no setting reads"
    assert set(env) - fields == set()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_ports_and_probes_are_the_servers(rendered: dict[str, list[Doc]], overlay: str,
                                                    effective_settings: MakeSettings) -> None:
    docs = rendered[overlay]
    c = server_container(docs)
    settings = effective_settings(twofour_env(docs, c), c["args"])
    # The manifests run the server on its default ports (what the Service, the docs and clients assume).
    defaults = {name: Settings.model_fields[name].default for name in ("http_port", "grpc_port", "metrics_port")}
    assert {name: getattr(settings, name) for name in defaults} == defaults
    listeners = listener_ports(settings)
    assert {p["name"]: listeners.get(p["containerPort"]) for p in c["ports"]} == {
        "http": "http", "grpc": "grpc", "metrics": "metrics"}
    assert settings.host == "0.0.0.0", "probes and the Service reach the pod IP, not loopback"
    for probe, path in PROBE_PATHS.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert listeners[named_port(c, get["port"])] == "http", probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_repository_flag_points_at_the_mounted_volume(rendered: dict[str, list[Doc]], overlay: str,
                                                            effective_settings: MakeSettings) -> None:
    docs = rendered[overlay]
    c = server_container(docs)
    settings = effective_settings(twofour_env(docs, c), c["args"])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert str(settings.model_repository) in mounts
    assert mounts[str(settings.model_repository)].get("readOnly") is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(rendered: dict[str, list[Doc]], overlay: str,
                                               effective_settings: MakeSettings) -> None:
    docs = rendered[overlay]
    pod = find(docs, "Deployment", "twofour")["spec"]["template"]["spec"]
    c = server_container(docs)
    settings = effective_settings(twofour_env(docs, c), c["args"])
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 5, "endpoints need a few seconds to drop the pod before the drain starts"
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.exit_timeout_secs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hardened_pod(rendered: dict[str, list[Doc]], overlay: str) -> None:
    pod = find(rendered[overlay], "Deployment", "twofour")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
    tmp = [m for m in server_container(rendered[overlay])["volumeMounts"] if m["mountPath"] == "/tmp"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]


def test_service_ports_target_the_server_listeners(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["cpu"]
    c = server_container(docs)
    service = find(docs, "Service", "twofour")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {name: named_port(c, p["targetPort"]) for name, p in ports.items()} == {
        "http": 8000, "grpc": 8001, "metrics": 8002}
    assert ports["grpc"]["appProtocol"] == "grpc"
    selector = service["spec"]["selector"]
    labels = find(docs, "Deployment", "twofour")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_gpu_overlay_asks_for_a_gpu_and_runs_on_cuda(rendered: dict[str, list[Doc]],
                                                     effective_settings: MakeSettings) -> None:
    docs = rendered["gpu"]
    pod = find(docs, "Deployment", "twofour")["spec"]["template"]["spec"]
    c = server_container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    assert effective_settings(twofour_env(docs, c), c["args"]).device == "cuda"
    assert {v["name"]: v for v in pod["volumes"]}["models"]["persistentVolumeClaim"]["claimName"] == "twofour-models"
    find(docs, "PersistentVolumeClaim", "twofour-models")
    assert not pod.get("initContainers")


def test_cpu_overlay_runs_on_cpu_with_threads_matching_its_request(rendered: dict[str, list[Doc]],
                                                                  effective_settings: MakeSettings) -> None:
    docs = rendered["cpu"]
    c = server_container(docs)
    settings = effective_settings(twofour_env(docs, c), c["args"])
    assert settings.device == "cpu"
    assert settings.intra_op_threads == int(c["resources"]["requests"]["cpu"])


def kserve_container(kserve: list[Doc]) -> Doc:
    runtime = find(kserve, "ClusterServingRuntime", "twofour")
    (c,) = runtime["spec"]["containers"]
    return c


def test_kserve_runtime_args_and_env_are_accepted(kserve: list[Doc], effective_settings: MakeSettings) -> None:
    c = kserve_container(kserve)
    fields = {f"TWOFOUR_{name.upper()}" for name in Settings.model_fields}
    env = {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("TWOFOUR_")}
    assert set(env) <= fields
    settings = effective_settings(env, c["args"])
    assert str(settings.model_repository) == "/mnt/models", "KServe's storage initializer fills /mnt/models"
    listeners = listener_ports(settings)
    assert listeners[c["ports"][0]["containerPort"]] == "http"
    assert listeners[9000] == "grpc"
    for probe, path in PROBE_PATHS.items():
        assert c[probe]["httpGet"]["path"] == path
        assert listeners[c[probe]["httpGet"]["port"]] == "http"
    annotations = find(kserve, "ClusterServingRuntime", "twofour")["spec"]["annotations"]
    assert listeners[int(annotations["prometheus.kserve.io/port"])] == "metrics"


def test_kserve_examples_use_the_runtime(kserve: list[Doc]) -> None:
    runtime = find(kserve, "ClusterServingRuntime", "twofour")
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    services = [d for d in kserve if d["kind"] == "InferenceService"]
    assert len(services) == 2
    for isvc in services:
        model = isvc["spec"]["predictor"]["model"]
        assert model["modelFormat"]["name"] in formats and model["runtime"] == "twofour"
        assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
        if model["protocolVersion"] == "grpc-v2":
            assert [p["containerPort"] for p in model["ports"] if p["name"] == "h2c"] == [9000]
