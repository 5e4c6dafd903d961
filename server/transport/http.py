"""The KServe v2 HTTP/REST API (Triton's flavour) over a DataPlane: `create_http_app(...) -> FastAPI`.

Routes are plain Starlette endpoints (request in, raw response out): the protocol's JSON is small and fixed, so
pydantic models would add cost on every call and nothing the codec does not already check. Health answers 200
or 503 (tritonclient only tests for 200), model readiness 200 or 400 as in Triton (404 for an unknown model),
and every failure is `{"error": ...}` with the status from server.errors.STATUS.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from server.codec.http_documents import config_document, statistics_document
from server.codec.http_json import dumps, parse_object
from server.dataplane import DataPlane
from server.errors import ErrorKind, ServingError, invalid
from server.repository_control import RepositoryControl
from server.settings import Settings
from server.transport.http_body import read_body
from server.transport.http_errors import JSON, error_response, guarded, install_handlers
from server.transport.http_infer import InferEndpoint, InferFastPath
from server.transport.http_unsupported import unsupported_routes
from server.transport.openai import openai_routes

MODEL = "/v2/models/{model}"
VERSIONED = "/v2/models/{model}/versions/{version}"


def _json(document: Any, status: int = 200) -> Response:
    return Response(dumps(document), status_code=status, media_type=JSON)


def _target(request: Request) -> tuple[str, str]:
    return request.path_params["model"], request.path_params.get("version", "")


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _optional_object(request: Request, limit: int, timeout: float, what: str) -> dict[str, Any]:
    """A small optional JSON body (repository API): empty means {}."""
    body = await read_body(request, limit, timeout)
    return parse_object(body, what) if len(body) else {}


class Endpoints:
    """Every non-inference route, bound to the dataplane, repository control and settings."""

    def __init__(self, dataplane: DataPlane, control: RepositoryControl, settings: Settings) -> None:
        self.dataplane = dataplane
        self.control = control
        self.limit = settings.max_request_bytes
        self.body_timeout = settings.body_timeout_secs

    @guarded
    async def server_metadata(self, request: Request) -> Response:
        return _json(self.dataplane.server_metadata())

    @guarded
    async def live(self, request: Request) -> Response:
        if self.dataplane.live():
            return Response(status_code=200)
        return error_response(ServingError(ErrorKind.UNAVAILABLE, "server is not live"))

    @guarded
    async def ready(self, request: Request) -> Response:
        if self.dataplane.ready():
            return Response(status_code=200)
        reason = "server is shutting down" if self.dataplane.shutting_down else "not every model is ready yet"
        return error_response(ServingError(ErrorKind.UNAVAILABLE, f"server is not ready: {reason}"))

    @guarded
    async def model_metadata(self, request: Request) -> Response:
        return _json(self.dataplane.model_metadata(*_target(request)))

    @guarded
    async def model_ready(self, request: Request) -> Response:
        name, version = _target(request)
        if self.dataplane.model_ready(name, version):
            return Response(status_code=200)
        try:  # not ready: say why, with 404 for a name the server does not know
            self.dataplane.registry.resolve(name, version)
        except ServingError as exc:
            if exc.kind == ErrorKind.NOT_FOUND:
                return error_response(exc)
            return error_response(ServingError(ErrorKind.INVALID_ARGUMENT, exc.message))
        return error_response(ServingError(ErrorKind.INVALID_ARGUMENT, f"model {name!r} is not ready"))

    @guarded
    async def model_config(self, request: Request) -> Response:
        return _json(config_document(self.dataplane.model_config(*_target(request))))

    @guarded
    async def model_statistics(self, request: Request) -> Response:
        name = request.path_params.get("model", "")
        return _json(statistics_document(self.dataplane.statistics(name, request.path_params.get("version", ""))))

    @guarded
    async def sparsity(self, request: Request) -> Response:
        return _json(self.dataplane.sparsity_report(*_target(request)))

    @guarded
    async def repository_index(self, request: Request) -> Response:
        self.control.authorize(bearer_token(request))
        body = await _optional_object(request, self.limit, self.body_timeout, "repository index request")
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise invalid(f"repository index request: 'ready' must be true or false, got {ready!r}")
        return _json(self.control.index(ready_only=ready))

    @guarded
    async def load(self, request: Request) -> Response:
        body = await _optional_object(request, self.limit, self.body_timeout, "model load request")
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            raise invalid("model load request: 'parameters' must be a JSON object")
        overrides = sorted(k for k in parameters if k == "config" or k.startswith("file:"))
        if overrides:
            raise ServingError(ErrorKind.UNIMPLEMENTED, f"load with {overrides} is not supported: twofour loads "
                               "models only from the repository on disk")
        await self.control.load(request.path_params["model"], bearer_token(request))
        return Response(status_code=200)

    @guarded
    async def unload(self, request: Request) -> Response:
        body = await _optional_object(request, self.limit, self.body_timeout, "model unload request")
        if not isinstance(body.get("parameters", {}), dict):
            raise invalid("model unload request: 'parameters' must be a JSON object")
        await self.control.unload(request.path_params["model"], bearer_token(request))
        return Response(status_code=200)


def create_http_app(dataplane: DataPlane, control: RepositoryControl, settings: Settings) -> FastAPI:
    """The HTTP application; the caller runs it (uvicorn) and owns its lifecycle."""
    app = FastAPI(title="twofour", docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)
    e = Endpoints(dataplane, control, settings)
    infer = InferEndpoint(dataplane, settings)
    routes: list[tuple[str, Any, str]] = [
        ("/v2", e.server_metadata, "GET"),
        ("/v2/health/live", e.live, "GET"),
        ("/v2/health/ready", e.ready, "GET"),
        ("/v2/models/stats", e.model_statistics, "GET"),  # before {model}: "stats" is not a model name here
        ("/v2/repository/index", e.repository_index, "POST"),
        ("/v2/repository/models/{model}/load", e.load, "POST"),
        ("/v2/repository/models/{model}/unload", e.unload, "POST"),
    ]
    for base in (MODEL, VERSIONED):
        routes += [
            (base, e.model_metadata, "GET"),
            (base + "/ready", e.model_ready, "GET"),
            (base + "/config", e.model_config, "GET"),
            (base + "/stats", e.model_statistics, "GET"),
            (base + "/sparsity", e.sparsity, "GET"),
            (base + "/infer", infer.handle, "POST"),
        ]
    routes += openai_routes(dataplane, settings)  # /v1/embeddings, /v1/models (relayed by the native front)
    for path, endpoint, method in routes:
        app.add_route(path, endpoint, methods=[method], include_in_schema=False)
    for path, endpoint, methods in unsupported_routes():
        app.add_route(path, endpoint, methods=methods, include_in_schema=False)
    return app


def create_http_asgi(dataplane: DataPlane, control: RepositoryControl, settings: Settings) -> InferFastPath:
    """What the server runs: the FastAPI app behind the infer fast path (same routes, same responses)."""
    return InferFastPath(create_http_app(dataplane, control, settings), InferEndpoint(dataplane, settings))
