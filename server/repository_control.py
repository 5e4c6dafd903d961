"""Repository control (Triton's model_repository extension): index, load and unload behind a switch and a token.

Kept apart from the dataplane because it is an operator's API with its own access rule, not part of serving:
both transports call `authorize` with the bearer token they received, so the rule is written once.
"""

from __future__ import annotations

from server.errors import ErrorKind, ServingError
from server.registry import Registry
from server.settings import Settings


class RepositoryControl:
    """Repository API (index/load/unload) behind the settings' switch and bearer token."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def authorize(self, token: str | None) -> None:
        if not self.settings.allow_repository_control:
            raise ServingError(ErrorKind.PERMISSION_DENIED, "repository control is disabled on this server")
        expected = self.settings.repository_token
        if expected and token != expected:
            raise ServingError(ErrorKind.UNAUTHENTICATED, "repository control needs a valid bearer token")

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's RepositoryIndex rows: every model in the repository, with state and reason."""
        entries = {e.name: e for e in self.registry.entries()}
        rows: list[dict[str, str]] = []
        for name in sorted(set(self.registry.repository_names()) | set(entries)):
            entry = entries.get(name)
            if entry is None:
                rows.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": "not loaded"})
                continue
            versions: list[int | None] = [*sorted(entry.versions)] or [None]
            for v in versions:
                rows.append({"name": name, "version": "" if v is None else str(v), "state": entry.state,
                             "reason": entry.reason})
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    async def load(self, name: str, token: str | None) -> None:
        self.authorize(token)
        entry = await self.registry.load(name)
        if entry.state != "READY" or entry.reason:
            raise ServingError(ErrorKind.INVALID_ARGUMENT, f"failed to load model {name!r}: {entry.reason}")

    async def unload(self, name: str, token: str | None) -> None:
        self.authorize(token)
        await self.registry.unload(name)
