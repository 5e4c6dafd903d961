"""The standard `grpc.health.v1.Health` service, answering from `DataPlane.ready()` at the moment of each call.

Kubernetes' native gRPC probes and grpc_health_probe speak this protocol, not Triton's ServerReady. Asking the
dataplane on every Check (instead of pushing state changes into grpc's stock servicer) means the answer can never
lag behind a model load, an unload or the start of a drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.dataplane import DataPlane
from server.errors import STATUS, ErrorKind

# Service names a probe may ask about: "" is the whole server (the convention), plus the inference service.
SERVICES = ("", "inference.GRPCInferenceService")
WATCH_INTERVAL_S = 0.5  # how often Watch re-reads readiness; probes use Check, so this only bounds staleness


class ReadinessHealthServicer(health_pb2_grpc.HealthServicer):
    """SERVING while the dataplane is ready, NOT_SERVING while starting, draining or (strict) a model is down."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    def _status(self) -> int:
        serving = self._dataplane.ready()
        return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        if request.service not in SERVICES:
            await context.abort(STATUS[ErrorKind.NOT_FOUND].grpc, f"unknown service {request.service!r}; ask about ''")
        return health_pb2.HealthCheckResponse(status=self._status())

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """Send the status now and again whenever it changes (the protocol's contract), until the client leaves."""
        if request.service not in SERVICES:
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            return
        last = None
        while True:
            status = self._status()
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_INTERVAL_S)


def add_health_service(server: grpc.aio.Server, dataplane: DataPlane) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(dataplane), server)
