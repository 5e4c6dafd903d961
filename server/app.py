"""Composition root: build every component from Settings, run the listeners, drain on SIGTERM.

Startup opens the ports first (liveness answers at once, readiness stays false) and then loads models, so
Kubernetes startup probes see progress. Shutdown turns readiness false immediately, refuses new inference with
UNAVAILABLE / 503 + `Connection: close`, lets in-flight requests finish for up to `exit_timeout_secs`, keeps
refusing for `REFUSAL_WINDOW_S`, then closes the listeners so that no request ends CANCELLED or on a reset
connection: gRPC's connections are ended before gRPC's own stop (transport/grpc_drain.py), uvicorn's backlog is
served before its listener closes (transport/http_drain.py); then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from server.dataplane import DataPlane
from server.metrics import Metrics
from server.metrics_http import start_metrics_listener
from server.registry import Registry
from server.repository_control import RepositoryControl
from server.runtime.select import DeviceError, create_runtime, resolve_device
from server.settings import HTTP_KEEP_ALIVE_S, Settings

log = logging.getLogger("twofour")

REFUSAL_WINDOW_S = 0.3  # after the drain, before the listeners close (serve)


@dataclass
class App:
    """Every long-lived object of one server process; built by `build_app`, no globals."""

    settings: Settings
    device: str
    metrics: Metrics
    registry: Registry
    dataplane: DataPlane
    control: RepositoryControl
    ports: dict[str, int] = field(default_factory=dict)


def build_app(settings: Settings) -> App:
    device = resolve_device(settings.device)
    options: dict[str, Any] = {"precision": settings.cpu_precision}
    if device == "cuda":
        options = {"dtype": settings.dtype, "keep_dense": settings.gpu_keep_dense}
    metrics = Metrics()
    registry = Registry(settings.model_repository, metrics,
                        functools.partial(_build_runtime, device=device, options=options))
    if device == "cuda":  # per-layer kernel choice and allocator bytes, read from the registry at scrape time
        from server.runtime.gpu_metrics import GpuCollector

        metrics.registry.register(GpuCollector(registry))
    else:  # the CPU precision each model runs at, and what was measured to choose it
        from server.runtime.cpu_metrics import CpuPrecisionCollector

        metrics.registry.register(CpuPrecisionCollector(registry))
    dataplane = DataPlane(registry, settings, metrics)
    return App(settings, device, metrics, registry, dataplane, RepositoryControl(registry, settings))


def _build_runtime(version_dir: Any, config: Any, *, device: str, options: dict[str, Any]) -> Any:
    return create_runtime(version_dir, config, device, **options)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; with proto 0 Nagle stays on
    # and every HTTP response body waits ~40 ms for the client's delayed ACK of the headers.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _bind_private(path: Path) -> socket.socket:
    """uvicorn's Unix socket behind the native front, listening before the front can connect to it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _load_models(app: App) -> None:
    settings = app.settings
    if settings.model_control_mode == "explicit":
        for name in settings.load_model:
            await app.registry.load(name)
    else:
        await app.registry.load_all()
    for entry in app.registry.entries():
        if entry.state != "READY":
            log.error("model %s is UNAVAILABLE: %s", entry.name, entry.reason)
    app.dataplane.starting = False


async def serve(app: App, stop: asyncio.Event) -> int:
    """Run until `stop` is set, then drain; returns the process exit code."""
    from server.transport.grpc import create_grpc_server
    from server.transport.http import create_http_asgi
    from server.transport.http_drain import DrainingUvicorn

    settings = app.settings
    listeners = settings.enabled_listeners()
    grpc_server = http_server = metrics_server = None
    http_task: asyncio.Task[None] | None = None
    if "metrics" in listeners:
        metrics_server = start_metrics_listener(app.metrics, settings.host, listeners["metrics"])
        app.ports["metrics"] = metrics_server.port
    frontend = None
    if "grpc" in listeners and settings.grpc_frontend != "inline":
        from server.transport.grpc_front_metrics import FrontCollector
        from server.transport.grpc_front_process import GrpcFrontend

        frontend = GrpcFrontend(app.dataplane, app.control, settings, on_failure=stop.set)
        app.metrics.registry.register(FrontCollector(lambda: frontend.pid, lambda: frontend.restarts))
        _add_sparsity_service(frontend.relay_server, app)
    elif "grpc" in listeners:
        grpc_server, app.ports["grpc"] = create_grpc_server(app.dataplane, app.control, settings)
        _add_sparsity_service(grpc_server, app)
        await grpc_server.start()
    if frontend is None:
        from server.transport.grpc_front_process import front_serves_http

        front_serves_http(settings, None)  # only to refuse `--http-frontend native` without a front
    http_behind_front = frontend is not None and frontend.serves_http
    if "http" in listeners:  # first, so that the front relays to a listening uvicorn from its first request
        if frontend is not None and frontend.serves_http:
            sock = _bind_private(frontend.http_relay_socket)
        else:
            sock = _bind(settings.host, listeners["http"])
            app.ports["http"] = sock.getsockname()[1]
        config = uvicorn.Config(create_http_asgi(app.dataplane, app.control, settings), log_level="warning",
                                access_log=False, lifespan="off", proxy_headers=False, timeout_graceful_shutdown=1,
                                http=_http_protocol(settings),
                                # behind the front, which closes idle clients (and their relay connections) itself
                                timeout_keep_alive=75 if http_behind_front else HTTP_KEEP_ALIVE_S)
        http_server = DrainingUvicorn(config)
        http_task = asyncio.create_task(http_server.serve(sockets=[sock]))
    if frontend is not None:
        try:
            app.ports["grpc"] = await frontend.start()
        except BaseException:
            if http_server is not None and http_task is not None:  # no uvicorn left serving a socket nobody reaches
                http_server.should_exit = True
                await http_task
            raise
        if http_behind_front:
            app.ports["http"] = frontend.http_port
    log.info("twofour listening on %s (device %s)", " ".join(f"{k}={v}" for k, v in app.ports.items()), app.device)
    loader = asyncio.create_task(_load_models(app))
    await stop.wait()

    log.info("shutdown requested: readiness off, draining for up to %.0fs", settings.exit_timeout_secs)
    app.dataplane.begin_shutdown()
    loader.cancel()
    started = asyncio.get_running_loop().time()
    drained = await app.dataplane.drain(settings.exit_timeout_secs)
    if not drained:
        log.warning("exit timeout reached with requests still in flight")
    # Keep refusing a moment longer with the listeners open: a client whose kept-alive connection sat idle through
    # the drain gets its 503 + Connection: close (or UNAVAILABLE) now rather than a connection closed under it.
    spent = asyncio.get_running_loop().time() - started
    await asyncio.sleep(max(0.0, min(REFUSAL_WINDOW_S, settings.exit_timeout_secs - spent - 1.0)))
    if frontend is not None:
        await frontend.stop(grace=1.0)
    if grpc_server is not None:
        from server.transport.grpc_drain import close_public_port

        close_public_port(app.ports["grpc"])  # before gRPC's own stop, which would answer CANCELLED (grpc_drain.py)
        await grpc_server.stop(grace=1.0)
    if http_server is not None and http_task is not None:
        http_server.should_exit = True
        await http_task
    if metrics_server is not None:
        metrics_server.close()
    await app.registry.close()
    if frontend is not None and frontend.failed:
        log.error("twofour stopped: the gRPC front process kept failing")
        return 1
    log.info("twofour stopped")
    return 0


def _add_sparsity_service(server: Any, app: App) -> None:
    with contextlib.suppress(ImportError):
        from server.transport.sparsity_service import add_sparsity_service

        add_sparsity_service(server, app.dataplane)


def _http_protocol(settings: Settings) -> Any:
    """httptools with a bound on request heads (uvicorn's own has none); h11 bounds them itself (16 KiB)."""
    if not _has("httptools"):
        return "h11"
    from server.transport.http_protocol import limited_protocol

    return limited_protocol(settings.max_header_bytes)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run(settings: Settings) -> int:
    """`twofour serve`: set up logging and threads, run the server loop, return the exit code."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    if settings.intra_op_threads:
        torch.set_num_threads(settings.intra_op_threads)
    try:
        app = build_app(settings)
    except DeviceError as exc:
        print(f"twofour serve: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(app, stop)

    try:
        return asyncio.run(main())
    except OSError as exc:  # a port in use or an address we cannot bind
        print(f"twofour serve: cannot start: {exc}", file=sys.stderr)
        return 1
