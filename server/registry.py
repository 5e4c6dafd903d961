"""Which models are loaded: (model, version) -> LoadedVersion, with Triton's states and reasons.

Loading runs in a worker thread (torch I/O blocks) and swaps a model in only when every version loaded and ran
its config's `model_warmup` (server/warmup.py), so a reload never leaves a model half-served or cold. A model that
fails is kept as UNAVAILABLE with its reason; it never stops the others or the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.factory import create_scheduler
from server.batching.work import Scheduler
from server.errors import ErrorKind, ServingError, not_found, redact_paths, unavailable
from server.metrics import Metrics
from server.repository import (
    RepositoryError,
    check_version_dir,
    list_model_names,
    model_dir,
    read_config,
    read_labels,
    select_versions,
)
from server.runtime.base import Runtime, RuntimeDescription
from server.warmup import run_warmup

log = logging.getLogger("twofour.registry")

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"

RuntimeBuilder = Callable[[Path, mc.ModelConfig], Runtime]


@dataclass
class LoadedVersion:
    version: int
    runtime: Runtime
    scheduler: Scheduler
    description: RuntimeDescription
    labels: dict[str, tuple[bytes, ...]] = field(default_factory=dict)  # classification labels, by output


@dataclass
class ModelEntry:
    name: str
    state: str = UNAVAILABLE
    reason: str = ""
    config: mc.ModelConfig | None = None
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    wanted: bool = True  # False once explicitly unloaded: strict readiness then no longer waits for it


class Registry:
    """The server's loaded models; all mutation happens on the event loop."""

    def __init__(self, root: Path, metrics: Metrics, build_runtime: RuntimeBuilder) -> None:
        self.root = root
        self._metrics = metrics
        self._build_runtime = build_runtime
        self._models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def entries(self) -> list[ModelEntry]:
        return [self._models[n] for n in sorted(self._models)]

    def repository_names(self) -> list[str]:
        return list_model_names(self.root)

    def entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise not_found(f"unknown model: {name!r}")
        return entry

    def resolve(self, name: str, version: str = "") -> tuple[ModelEntry, LoadedVersion]:
        """The version a request addresses: explicit, or the highest loaded one when empty."""
        entry = self.entry(name)
        if entry.state != READY or not entry.versions:
            reason = f": {entry.reason}" if entry.reason else ""
            raise unavailable(f"model {name!r} is not ready (state {entry.state}{reason})")
        if not version:
            return entry, entry.versions[max(entry.versions)]
        if not (version.isascii() and version.isdigit()):  # str.isdigit alone accepts '²', which int() refuses
            raise ServingError(ErrorKind.INVALID_ARGUMENT, f"model version must be a positive integer, got {version!r}")
        loaded = entry.versions.get(int(version))
        if loaded is None:
            raise not_found(f"model {name!r} has no loaded version {version} (loaded: {sorted(entry.versions)})")
        return entry, loaded

    async def load_all(self) -> None:
        for name in self.repository_names():
            await self.load(name)

    async def load(self, name: str) -> ModelEntry:
        """Load (or reload) a model from the repository; failures are recorded, not raised, except unknown names."""
        try:
            path = model_dir(self.root, name)
        except RepositoryError as exc:
            raise ServingError(ErrorKind.INVALID_ARGUMENT, str(exc)) from None
        if not path.is_dir():
            raise not_found(f"model {name!r} is not in the model repository")
        async with self._locks.setdefault(name, asyncio.Lock()):
            entry = self._models.setdefault(name, ModelEntry(name))
            entry.wanted = True
            previous = dict(entry.versions) if entry.state == READY else {}
            if not previous:
                entry.state = LOADING
            try:
                config, versions = await asyncio.to_thread(self._load_blocking, path, name)
            except Exception as exc:  # a broken model must never stop the server
                message = str(exc) if isinstance(exc, (RepositoryError, ValueError)) else f"{type(exc).__name__}: {exc}"
                # The reason reaches clients (repository index, "not ready" errors): no filesystem paths in it.
                message = redact_paths(message.replace(str(self.root.resolve()), "<repository>")
                                       .replace(str(self.root), "<repository>"))
                log.error("model %s failed to load: %s", name, message)
                if not previous:
                    entry.state, entry.reason, entry.config = UNAVAILABLE, message, None
                else:
                    entry.reason = f"reload failed, still serving the previous load: {message}"
                return entry
            entry.config, entry.versions, entry.state, entry.reason = config, versions, READY, ""
            for old in previous.values():
                await old.scheduler.close()
                old.runtime.close()
            log.info("model %s ready, versions %s", name, sorted(versions))
            return entry

    def _load_blocking(self, path: Path, name: str) -> tuple[mc.ModelConfig, dict[int, LoadedVersion]]:
        config = read_config(path, name)
        labels = read_labels(path, config)
        chosen = select_versions(path, config)
        if not chosen:
            raise RepositoryError(f"{name}: no numeric version directory to serve")
        versions: dict[int, LoadedVersion] = {}
        for version in chosen:
            start = time.perf_counter()
            version_dir = path / str(version)
            check_version_dir(version_dir, name, version)
            runtime = self._build_runtime(version_dir, config)
            try:
                run_warmup(config, runtime, path)  # before READY; the load time below includes it
            except Exception:
                runtime.close()
                raise
            description = runtime.describe()
            recorder = self._metrics.recorder(name, str(version))
            self._metrics.weights(name, str(version), description.bytes_by_kind, description.dense_equivalent_bytes,
                                  time.perf_counter() - start)
            scheduler = create_scheduler(config, runtime, recorder)
            versions[version] = LoadedVersion(version, runtime, scheduler, description, labels)
        return config, versions

    async def unload(self, name: str) -> None:
        entry = self.entry(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            versions, entry.versions = entry.versions, {}
            entry.state, entry.reason, entry.wanted = UNLOADING, "", False
            for loaded in versions.values():
                await loaded.scheduler.close()
                loaded.runtime.close()
            entry.state, entry.reason = UNAVAILABLE, "unloaded"

    async def close(self) -> None:
        for entry in list(self._models.values()):
            if entry.versions:
                await self.unload(entry.name)
