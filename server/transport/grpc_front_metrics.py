"""Prometheus series of the gRPC front process: the standard process collector sees only the server's own process,
and the front's CPU is a large share of the pod's (about a third at full gRPC load on the benchmark MLP).

Read from /proc at scrape time (Linux, as the container is). The CPU counter starts again from zero when a dead
front is replaced, which Prometheus' rate() treats as a counter reset; the restarts counter says when that was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


def process_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a live process, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/statm") as statm:
            fields = stat.read().rsplit(")", 1)[1].split()
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, pages * os.sysconf("SC_PAGE_SIZE")


class FrontCollector(Collector):
    """Reads the current front's pid and restart count through callables, so it follows a replaced process."""

    def __init__(self, pid: Callable[[], int | None], restarts: Callable[[], int]) -> None:
        self._pid, self._restarts = pid, restarts

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cpu = CounterMetricFamily("twofour_grpc_frontend_cpu_seconds", "CPU time of the gRPC front process")
        memory = GaugeMetricFamily("twofour_grpc_frontend_resident_memory_bytes",
                                   "resident memory of the gRPC front process")
        pid = self._pid()
        usage = process_usage(pid) if pid is not None else None
        if usage is not None:
            cpu.add_metric([], usage[0])
            memory.add_metric([], float(usage[1]))
        restarts = CounterMetricFamily("twofour_grpc_frontend_restarts", "gRPC front processes started again after "
                                       "one died")
        restarts.add_metric([], float(self._restarts()))
        yield cpu
        yield memory
        yield restarts
