"""`twofour.v1.SparsityService`: the sparsity report over gRPC, the same content as GET /v2/models/{m}/sparsity.

Our own package (not KServe's `inference`), so the Triton protocol stays exactly as the unmodified tritonclient
expects. The decision table is typed (`layers`), and the runtime's full details ride along as a Struct, so a
gRPC client sees everything the HTTP JSON holds.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from server.dataplane import DataPlane
from server.errors import ErrorKind, as_serving_error
from server.proto import sparsity_pb2 as pb
from server.proto import sparsity_pb2_grpc as pb_grpc

log = logging.getLogger("twofour.grpc.sparsity")


def _struct(details: dict[str, Any]) -> struct_pb2.Struct:
    """Details as a Struct; anything JSON cannot hold (a tuple, a Path) goes through json first."""
    plain = json.loads(json.dumps(details, default=str))
    return json_format.ParseDict(plain, struct_pb2.Struct())


def _layer(layer: dict[str, Any]) -> pb.LayerDecision:
    buckets = [pb.BucketTiming(batch=b["batch"], rows=b["rows"], dense_us=b["dense_us"], sparse_us=b["sparse_us"],
                               speedup=b["speedup"], kernel=b["kernel"]) for b in layer.get("buckets", [])]
    return pb.LayerDecision(layer=layer["layer"], out_features=layer["out_features"],
                            in_features=layer["in_features"], kernel=layer["kernel"], reason=layer["reason"],
                            buckets=buckets)


def report_to_proto(report: dict[str, Any]) -> pb.ModelSparsityResponse:
    """`DataPlane.sparsity_report(...)` as the response message."""
    versions = []
    for v in report["versions"]:
        details = v.get("details") or {}
        versions.append(pb.VersionSparsity(
            version=v["version"], device=v["device"], dtype=v["dtype"], sparse_layers=v["sparse_layers"],
            dense_layers=v["dense_layers"], bytes_by_kind=v["bytes_by_kind"],
            dense_equivalent_bytes=v["dense_equivalent_bytes"],
            layers=[_layer(layer) for layer in details.get("layers", [])], details=_struct(details)))
    return pb.ModelSparsityResponse(name=report["name"], versions=versions)


class SparsityServicer(pb_grpc.SparsityServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    async def ModelSparsity(self, request: pb.ModelSparsityRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelSparsityResponse:
        try:
            return report_to_proto(self._dataplane.sparsity_report(request.name, request.version))
        except Exception as exc:  # one error table for every transport
            error = as_serving_error(exc)
            if error.kind == ErrorKind.INTERNAL:
                log.exception("sparsity report for %s failed", request.name)
            await context.abort(error.status.grpc, error.message)
            raise  # unreachable: abort raises


def add_sparsity_service(server: grpc.aio.Server, dataplane: DataPlane) -> None:
    """Register the service on a (not yet started) server; the app calls this next to the KServe service."""
    pb_grpc.add_SparsityServiceServicer_to_server(SparsityServicer(dataplane), server)
