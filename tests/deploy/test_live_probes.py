"""A real `twofour serve`, configured by the CPU overlay's settings, answers the URLs the cluster will call.

The manifests' ports are the defaults (8000/8001/8002); here the same listeners are moved to free loopback ports
(flags win over the ConfigMap's environment) and every probe, scrape and health check of the manifests, the
KServe runtime and the Dockerfile is sent to the listener it names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from tests.deploy.manifests import ROOT, Doc, find, named_port, server_container, twofour_env
from tests.deploy.test_dockerfile import final_stage, one
from tests.support.server import ServerProcess

DEFAULT_PORTS = {8000: "http", 8001: "grpc", 8002: "metrics"}


@pytest.fixture(scope="module")
def cpu_server(rendered: dict[str, list[Doc]]) -> Iterator[ServerProcess]:
    """Serving the bundled repository: what the image copies to /models and the initContainer hands over."""
    repository = ROOT / "model_repo"
    docs = rendered["cpu"]
    env = twofour_env(docs, server_container(docs))
    with pytest.MonkeyPatch.context() as patch:  # only the manifests' settings, none from this shell
        for key in [k for k in os.environ if k.startswith("TWOFOUR_")]:
            patch.delenv(key)
        server = ServerProcess(repository, env=env, timeout=120)
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"server exited with {code}:\n{server.output()}"


def live_port(server: ServerProcess, manifest_port: int) -> int:
    listener = DEFAULT_PORTS[manifest_port]
    return {"http": server.http_port, "grpc": server.grpc_port, "metrics": server.metrics_port}[listener]


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode(errors="replace")


def test_deployment_probes_are_answered(cpu_server: ServerProcess, rendered: dict[str, list[Doc]]) -> None:
    c = server_container(rendered["cpu"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = c[probe]["httpGet"]
        status, _ = get(live_port(cpu_server, named_port(c, http_get["port"])), http_get["path"])
        assert status == 200, probe


def test_servicemonitor_scrape_is_answered(cpu_server: ServerProcess, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["cpu"]
    c = server_container(docs)
    (endpoint,) = find(docs, "ServiceMonitor", "twofour")["spec"]["endpoints"]
    service_port = next(p for p in find(docs, "Service", "twofour")["spec"]["ports"] if p["name"] == endpoint["port"])
    status, text = get(live_port(cpu_server, named_port(c, service_port["targetPort"])), endpoint["path"])
    assert status == 200
    assert 'twofour_weight_bytes{kind="sparse_2_4",model="mnist_mlp",version="1"}' in text


def test_kserve_probe_paths_are_answered(cpu_server: ServerProcess, kserve: list[Doc]) -> None:
    (c,) = find(kserve, "ClusterServingRuntime", "twofour")["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        status, _ = get(cpu_server.http_port, c[probe]["httpGet"]["path"])
        assert status == 200, probe


def test_docker_healthcheck_command_passes_and_fails(cpu_server: ServerProcess) -> None:
    command = one(final_stage(), "HEALTHCHECK").arguments.split(" CMD ", 1)[1]
    argv = json.loads(command)
    assert argv[0] == "python"
    argv[0] = sys.executable
    env = {**os.environ, "TWOFOUR_HTTP_PORT": str(cpu_server.http_port)}
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    env["TWOFOUR_HTTP_PORT"] = str(cpu_server.grpc_port)  # not an HTTP/1 listener: must fail
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
