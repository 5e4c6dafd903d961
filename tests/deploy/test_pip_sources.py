"""deploy/pip_sources.py (make image-check) hands the image build the host's pip sources: the pip.conf it writes
names what the host's pip uses, local directories become loopback URLs that really serve their files (index pages'
relative links included), and a host without any configuration gets no secret, so the Dockerfile's defaults hold."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.manifests import DEPLOY


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pip_sources = load("pip_sources")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return bytes(reply.read())


def test_later_origins_win_as_in_pip() -> None:
    listed = "\n".join([
        "global.find-links='/opt/old'",
        "global.extra-index-url='file:///a/simple file:///b/simple'",
        "global.constraint='/etc/xdg/pip/constraints.txt'",  # not a source: left out
        ":env:.find-links='/opt/new'",
        ":env:.cert='/etc/ssl/certs/ca-certificates.crt'",
    ])
    assert pip_sources.effective_options(listed) == {
        "find-links": "/opt/new",
        "extra-index-url": "file:///a/simple file:///b/simple",
        "cert": "/etc/ssl/certs/ca-certificates.crt",
    }


def local_index(root: Path) -> tuple[Path, Path, bytes]:
    """An index laid out like the host's (simple/<project>/index.html linking ../../files/<wheel>)."""
    wheel = b"not really a wheel, but bytes to compare"
    (root / "files").mkdir(parents=True)
    (root / "files" / "demo-1.0-py3-none-any.whl").write_bytes(wheel)
    (root / "simple" / "demo").mkdir(parents=True)
    (root / "simple" / "demo" / "index.html").write_text(
        '<a href="../../files/demo-1.0-py3-none-any.whl">demo-1.0-py3-none-any.whl</a>')
    wheels = root / "wheels"
    wheels.mkdir()
    (wheels / "torch-9.9.9+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(wheel)
    return root / "simple", wheels, wheel


def test_local_sources_are_served_on_loopback_with_their_relative_links(tmp_path: Path) -> None:
    simple, wheels, wheel = local_index(tmp_path / "mirror")
    cert = tmp_path / "ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    options = {"extra-index-url": f"file://{simple} https://pypi.example/simple", "find-links": str(wheels),
               "cert": str(cert)}
    served_root = tmp_path / "served"
    served_root.mkdir()
    with pip_sources.Served(served_root) as served:
        config, cert_file = pip_sources.build_config(options, served)
        values = dict(line.split(" = ", 1) for line in config.splitlines()[1:])
        assert config.startswith("[global]\n") and cert_file == cert
        assert values["cert"] == "/run/secrets/pip-cert"
        local_url, remote_url = values["extra-index-url"].split()
        assert remote_url == "https://pypi.example/simple" and local_url.startswith("http://127.0.0.1:")
        page_url = local_url + "demo/"
        page = fetch(page_url).decode()
        href = page.split('href="', 1)[1].split('"', 1)[0]
        assert fetch(urllib.parse.urljoin(page_url, href)) == wheel
        listing = fetch(values["find-links"]).decode()  # pip reads a find-links URL as a page of links
        name = "torch-9.9.9+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
        assert urllib.parse.quote(name) in listing
        assert fetch(values["find-links"] + urllib.parse.quote(name)) == wheel


def test_a_missing_local_source_is_refused(tmp_path: Path) -> None:
    served_root = tmp_path / "served"
    served_root.mkdir()
    with pip_sources.Served(served_root) as served, pytest.raises(SystemExit, match="not an existing"):
        pip_sources.build_config({"find-links": str(tmp_path / "absent")}, served)


def test_without_pip_configuration_the_build_gets_no_secret(tmp_path: Path) -> None:
    """`podman build` is replaced by a command that prints what it got: no --secret, so TORCH_INDEX_URL applies."""
    fake = tmp_path / "podman"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(DEPLOY / "pip_sources.py"), "podman", "build", "-t", "x", "."],
                          capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["build", "-t", "x", "."]
    env["PIP_FIND_LINKS"] = str(tmp_path)  # PIP_* variables apply even when no config file is read
    done = subprocess.run([sys.executable, str(DEPLOY / "pip_sources.py"), "podman", "build", "-t", "x", "."],
                          capture_output=True, text=True, env=env, check=True)
    args = done.stdout.split()
    assert args[0] == "build" and args[1].startswith("--secret=id=pip.conf,src=") and args[2:] == ["-t", "x", "."]
    assert "find-links = http://127.0.0.1:" in done.stderr
