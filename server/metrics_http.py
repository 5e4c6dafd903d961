"""The Prometheus listener: `/metrics` of one Metrics registry on its own port, served from a daemon thread.

A thread (prometheus_client's WSGI server) rather than a route on the asyncio loop: a scrape must still answer
while the loop is saturated with inference traffic, which is exactly when an operator needs the numbers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from server.metrics import Metrics


@dataclass
class MetricsListener:
    """A running listener; `port` is the bound port (useful when 0 was asked for)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        """Stop accepting scrapes and release the port; safe to call twice."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)


def start_metrics_listener(metrics: Metrics, host: str, port: int) -> MetricsListener:
    """Serve `metrics.registry` in the Prometheus text format on http://host:port/metrics."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsListener(server, thread)
