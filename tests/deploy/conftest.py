"""Rendered overlays and KServe manifests, once per session (rendering runs the real kustomize)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from server.cli import build_parser, settings_from_args
from server.settings import Settings
from tests.deploy.manifests import DEPLOY, KSERVE_FILES, OVERLAYS, Doc, MakeSettings, load_yaml, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """overlay name -> rendered documents."""
    return {name: render(DEPLOY / "k8s" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def kserve() -> list[Doc]:
    return [doc for path in KSERVE_FILES for doc in load_yaml(path)]


@pytest.fixture
def effective_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeSettings]:
    """What `twofour serve ARGS` would run with under exactly the environment ENV (nothing from this shell)."""

    def make(env: dict[str, str], args: list[str]) -> Settings:
        for key in [k for k in os.environ if k.startswith("TWOFOUR_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        try:
            parsed = build_parser().parse_args(["serve", *args])
        except SystemExit:
            pytest.fail(f"`twofour serve` rejects the arguments {args} (see its error above)")
        return settings_from_args(parsed)

    yield make
