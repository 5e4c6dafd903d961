"""The shape both runtime collectors share: facts read from the registry's loaded versions at scrape time.

Why scrape time, not gauges set at load: the series then appear and disappear with the model (load, reload,
unload) without bookkeeping. A subclass names its families and says what one loaded version contributes;
`extra` adds process-wide series (e.g. GPU memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.registry import ModelEntry

Families = dict[str, GaugeMetricFamily]


class Entries(Protocol):
    def entries(self) -> list[ModelEntry]: ...


class VersionFactsCollector(Collector):
    def __init__(self, registry: Entries) -> None:
        self._registry = registry

    def families(self) -> Families:
        raise NotImplementedError

    def add_version(self, families: Families, model: str, version: str, details: dict[str, Any]) -> None:
        """Add one loaded version's samples, from its runtime description's `details`."""
        raise NotImplementedError

    def extra(self, families: Families) -> None:
        """Process-wide samples; none by default."""

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self.families().values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self.families()
        for entry in self._registry.entries():
            for number, loaded in sorted(entry.versions.items()):
                self.add_version(families, entry.name, str(number), loaded.description.details)
        self.extra(families)
        yield from families.values()
