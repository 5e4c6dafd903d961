"""Every HTTP failure as `{"error": "<message>"}` with the status from the one table in server.errors.

tritonclient reads exactly that body (`response["error"]`) on any non-200, so FastAPI's own answers (unknown
route, wrong method, validation) are rewritten into the same shape. Unexpected exceptions become a 500 that
names the exception type, are logged with their traceback, and never take the server down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from server.codec.http_json import dumps
from server.errors import ErrorKind, ServingError, as_serving_error

log = logging.getLogger("twofour.http")

JSON = "application/json"


def error_body(error: ServingError) -> tuple[bytes, bool]:
    """The `{"error": ...}` body, and whether the connection must close (unread request bytes remain); the uvicorn
    route and the native front's HTTP replies (http_frames.py) both answer with it."""
    return dumps({"error": error.message}), error.close_connection


def error_response(error: ServingError) -> Response:
    """`{"error": ...}` with the table's status; closes the connection when unread request bytes remain."""
    body, close = error_body(error)
    return Response(body, status_code=error.status.http, media_type=JSON,
                    headers={"Connection": "close"} if close else None)


def exception_response(exc: BaseException, context: str) -> Response:
    """The response for any exception raised while serving `context` (logged when it is our fault)."""
    error = as_serving_error(exc)
    if error.kind == ErrorKind.INTERNAL:
        log.error("%s failed", context, exc_info=exc)
    return error_response(error)


def guarded(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Wrap a route so that every exception becomes an error response inside the route (no re-raise)."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the one place where anything is turned into a response
            return exception_response(exc, handler.__name__)

    return wrapper


def install_handlers(app: FastAPI) -> None:
    """Make the framework's own errors speak the same JSON as ours."""

    async def on_serving_error(request: Request, exc: Exception) -> Response:
        return exception_response(exc, f"{request.method} {request.url.path}")

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return Response(dumps({"error": message}), status_code=exc.status_code, media_type=JSON)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error_response(ServingError(ErrorKind.INVALID_ARGUMENT, f"invalid request: {details}"))

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_serving_error)
