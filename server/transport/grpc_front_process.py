"""`--grpc-frontend native|python|auto`, the server's side: start the gRPC front process, restart it, stop it in order.

The server keeps its gRPC service (every method, unchanged) on a private Unix socket and answers ModelInfer
frames on a second one (grpc_fastpath.py, on threads of its own); the front process (native/grpc_front/ or
grpc_front.py, chosen by grpc_front_command.py) owns the public port. The native front also owns the public HTTP
port (`--http-frontend auto|native`): infer requests reach the server as frames on the same socket
(http_frames.py), everything else goes to uvicorn, which then listens on a third private socket. Lifecycle:
- start: the sockets first, then the front, whose first stdout line says the port it bound (or why it could
  not: the server then fails to start, as it does when it cannot bind the port itself);
- a front that dies while the server runs is logged and started again on the same port; more than
  `MAX_RESTARTS` deaths within `RESTART_WINDOW_S` stop the server with exit code 1 (Kubernetes restarts the pod);
- stop: after the server's drain, SIGTERM to the front (it stops accepting and finishes what is in flight), then
  the server's own sockets close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from server.dataplane import DataPlane
from server.repository_control import RepositoryControl
from server.settings import HTTP_KEEP_ALIVE_S, Settings
from server.transport.grpc import MESSAGE_HEADROOM, bind_address, create_grpc_server
from server.transport.grpc_fastpath import FastPath
from server.transport.grpc_front_command import FrontUnavailable, front_command

log = logging.getLogger("twofour.grpc.front")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
START_TIMEOUT_S = 60.0


class GrpcFrontend:
    """The front process and the two sockets it talks to; `port` is the public gRPC port once started."""

    def __init__(self, dataplane: DataPlane, control: RepositoryControl, settings: Settings,
                 on_failure: Callable[[], None]) -> None:
        self._settings, self._on_failure = settings, on_failure
        self._command, self.implementation = front_command(settings.grpc_frontend)  # first: nothing to clean up
        self.serves_http = front_serves_http(settings, self.implementation)
        self._dir = Path(tempfile.mkdtemp(prefix="twofour-grpc-"))  # 0700: only this user reaches the sockets
        self._relay_socket, self._fast_socket = self._dir / "grpc.sock", self._dir / "infer.sock"
        self.http_relay_socket = self._dir / "http.sock"  # uvicorn's, when the front serves HTTP
        self._relay, _ = create_grpc_server(dataplane, control, settings, address=f"unix:{self._relay_socket}")
        self._message_limit = settings.max_request_bytes + MESSAGE_HEADROOM  # as the inline server's options
        self._fast = FastPath(dataplane, self._message_limit)
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._deaths: list[float] = []
        self.restarts = 0
        self._stopping = False
        self.port = self.http_port = 0
        self.failed = False

    @property
    def relay_server(self) -> grpc.aio.Server:
        """The server's own gRPC server (on the private socket), for registering further services before start."""
        return self._relay

    async def start(self) -> int:
        await self._relay.start()
        await self._fast.start(str(self._fast_socket))
        try:
            self.port, self.http_port = await self._spawn(self._settings.grpc_port, self._settings.http_port)
        except OSError:
            await self.stop(grace=0)  # no sockets or directory left behind by a failed start
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self.port

    async def _spawn(self, port: int, http_port: int) -> tuple[int, int]:
        settings = self._settings
        command = [*self._command, "--address", bind_address(settings.host, port),
                   "--fast-socket", str(self._fast_socket), "--relay-socket", str(self._relay_socket),
                   "--max-message-bytes", str(self._message_limit),
                   "--max-concurrent-streams", str(settings.grpc_max_concurrent_streams)]
        if self.serves_http:
            command += ["--http-address", bind_address(settings.host, http_port),
                        "--http-relay-socket", str(self.http_relay_socket),
                        "--http-max-head-bytes", str(settings.max_header_bytes),
                        "--http-max-body-bytes", str(settings.max_request_bytes),
                        "--http-body-timeout-secs", str(settings.body_timeout_secs),
                        "--http-keep-alive-secs", str(HTTP_KEEP_ALIVE_S)]
        # a session of its own: Ctrl-C or a signal to the server's process group reaches the server alone, which
        # then stops the front after its drain, in order (the front also exits by itself if the server dies)
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                       start_new_session=True)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
            said = json.loads(line or b"{}")
        except (TimeoutError, ValueError):
            said = {}
        if "port" not in said or (self.serves_http and "http_port" not in said):
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise OSError(said.get("error", f"the gRPC front process did not start (exit code {process.returncode})"))
        self._process = process
        log.info("gRPC front process %d (%s) serving port %d%s", process.pid, self.implementation, said["port"],
                 f" and HTTP port {said['http_port']}" if self.serves_http else "")
        return int(said["port"]), int(said.get("http_port", 0))

    async def _watch(self) -> None:
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            now = time.monotonic()
            self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW_S] + [now]
            log.error("gRPC front process %d exited with code %s", self._process.pid, code)
            if len(self._deaths) > MAX_RESTARTS:
                log.error("gRPC front process died %d times within %.0fs: stopping the server",
                          len(self._deaths), RESTART_WINDOW_S)
                self.failed = True
                self._on_failure()
                return
            try:
                await self._spawn(self.port, self.http_port)
                self.restarts += 1
            except OSError as exc:
                log.error("restarting the gRPC front process failed: %s", exc)
                self.failed = True
                self._on_failure()
                return

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.returncode is None else None

    async def stop(self, grace: float = 1.0) -> None:
        """After the drain: the front first (it finishes what is in flight), then the server's sockets."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace + 10.0)
            except TimeoutError:
                log.warning("gRPC front process %d ignored SIGTERM; killing it", process.pid)
                process.kill()
                await process.wait()
        self._fast.close()
        await self._relay.stop(grace=grace)
        shutil.rmtree(self._dir, ignore_errors=True)


def front_serves_http(settings: Settings, implementation: str | None) -> bool:
    """Whether the front owns the public HTTP port (`implementation`: the front that runs, None when none does).

    The native front does unless `--http-frontend uvicorn`; `--http-frontend native` without it refuses to start.
    """
    if "http" not in settings.enabled_listeners() or settings.http_frontend == "uvicorn":
        return False
    if implementation != "native" and settings.http_frontend == "native":
        raise FrontUnavailable("--http-frontend native needs the native gRPC front: gRPC on, with --grpc-frontend "
                               "native or auto and its binary; or use --http-frontend auto or uvicorn")
    return implementation == "native"
