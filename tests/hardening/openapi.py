"""A compact OpenAPI 3 description of twofour's KServe v2 REST surface, for schemathesis.

The server publishes no schema of its own (its routes are raw Starlette endpoints, see transport/http.py), so
this document states the contract the fuzzer checks: paths, parameters, the infer body's structure, and that
every non-200 answer is `{"error": string}`.
"""

from __future__ import annotations

from typing import Any

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string", "minLength": 1}}}
MODEL = {"name": "model", "in": "path", "required": True,
         "schema": {"anyOf": [{"enum": ["mlp", "mlp_batched", "mixed", "nosuch"]}, {"type": "string"}]}}
VERSION = {"name": "version", "in": "path", "required": True,
           "schema": {"anyOf": [{"enum": ["1", "2"]}, {"type": "string"}]}}
TENSOR = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"anyOf": [{"enum": ["INPUT0", "A", "B", "C", "D"]}, {"type": "string"}]},
    "datatype": {"enum": ["FP32", "FP16", "INT32", "BOOL", "BF16", "UINT64", "BYTES", "FP64"]},
    "shape": {"type": "array", "items": {"type": "integer"}, "maxItems": 4},
    "data": {"type": "array", "maxItems": 40},
    "parameters": {"type": "object"}}}
INFER = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "parameters": {"type": "object"},
    "inputs": {"type": "array", "items": TENSOR, "maxItems": 4},
    "outputs": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}


def _responses() -> dict[str, Any]:
    json_error = {"content": {"application/json": {"schema": ERROR}}}
    return {"200": {"description": "ok"}, "400": {"description": "bad request", **json_error},
            "401": {"description": "no token", **json_error}, "404": {"description": "unknown", **json_error},
            "413": {"description": "too large", **json_error}, "503": {"description": "unavailable", **json_error}}


def _get(*params: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"parameters": list(params), "responses": _responses()}}


def _post(schema: dict[str, Any], *params: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"post": {"parameters": list(params), "responses": _responses(), "requestBody": {
        "required": required, "content": {"application/json": {"schema": schema}}}}}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v2": _get(), "/v2/health/live": _get(), "/v2/health/ready": _get(), "/v2/models/stats": _get(),
        "/v2/repository/index": _post({"type": "object", "properties": {"ready": {}}}, required=False),
        "/v2/repository/models/{model}/load": _post({"type": "object", "properties": {"parameters": {}}}, MODEL,
                                                    required=False),
        "/v2/repository/models/{model}/unload": _post({"type": "object", "properties": {"parameters": {}}},
                                                      MODEL, required=False),
    }
    for base, params in (("/v2/models/{model}", (MODEL,)), ("/v2/models/{model}/versions/{version}",
                                                            (MODEL, VERSION))):
        for tail in ("", "/ready", "/config", "/stats", "/sparsity"):
            paths[base + tail] = _get(*params)
        paths[base + "/infer"] = _post(INFER, *params)
    return {"openapi": "3.0.3", "info": {"title": "twofour KServe v2 REST", "version": "1"}, "paths": paths}
