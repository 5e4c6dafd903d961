"""Triton's HTTP extension routes that twofour does not offer, answered 501 with a message naming the extension.

Without these routes tritonclient.http's shared-memory, trace and logging calls would get a bare 404 ("Not
Found"), which reads as a wrong URL; the errors table (server.errors) says an unsupported protocol extension is
UNIMPLEMENTED / 501 on both transports, with the same wording as the gRPC servicer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from server.errors import ErrorKind, ServingError
from server.transport.http_errors import error_response

_SYSTEM_SHM = "system shared memory"
_CUDA_SHM = "CUDA shared memory"
_TRACE = "the trace extension (TraceSetting)"
_LOGGING = "the logging extension (LogSettings); use --log-level"


def _unsupported(feature: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return error_response(ServingError(ErrorKind.UNIMPLEMENTED, f"{feature} is not supported by twofour"))

    return endpoint


def unsupported_routes() -> list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]]:
    """(path, endpoint, methods) for every Triton extension route that answers 501."""
    routes: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = []
    for prefix, feature in (("/v2/systemsharedmemory", _SYSTEM_SHM), ("/v2/cudasharedmemory", _CUDA_SHM)):
        endpoint = _unsupported(feature)
        for base in (prefix, prefix + "/region/{region}"):
            routes += [(base + "/status", endpoint, ["GET"]), (base + "/register", endpoint, ["POST"]),
                       (base + "/unregister", endpoint, ["POST"])]
    trace = _unsupported(_TRACE)
    routes += [("/v2/trace/setting", trace, ["GET", "POST"]),
               ("/v2/models/{model}/trace/setting", trace, ["GET", "POST"]),
               ("/v2/logging", _unsupported(_LOGGING), ["GET", "POST"])]
    return routes
