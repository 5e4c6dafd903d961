"""The dataplane's plain answers (dicts, VersionStats) as the protobuf messages of inference.GRPCInferenceService.

Kept apart from the servicer so the transport only routes calls, and so each conversion can be tested alone.
"""

from __future__ import annotations

from typing import Any, Iterable

from tritonclient.grpc import service_pb2 as pb

from server.metrics import DurationStat, VersionStats


def server_metadata(meta: dict[str, Any]) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])


def _tensors(rows: Iterable[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=r["name"], datatype=r["datatype"], shape=r["shape"])
            for r in rows]


def model_metadata(meta: dict[str, Any]) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                    inputs=_tensors(meta["inputs"]), outputs=_tensors(meta["outputs"]))


def _duration(stat: DurationStat) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=stat.count, ns=stat.ns)


def model_statistics(name: str, version: str, stats: VersionStats) -> pb.ModelStatistics:
    """One (model, version) row, field for field as Triton reports it."""
    return pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(batch_size=size, compute_input=_duration(b.compute_input),
                                    compute_infer=_duration(b.compute_infer),
                                    compute_output=_duration(b.compute_output))
            for size, b in sorted(stats.batch.items())
        ],
    )


def statistics_response(rows: Iterable[tuple[str, str, VersionStats]]) -> pb.ModelStatisticsResponse:
    return pb.ModelStatisticsResponse(model_stats=[model_statistics(n, v, s) for n, v, s in rows])


def repository_index(rows: Iterable[dict[str, str]]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(models=[
        pb.RepositoryIndexResponse.ModelIndex(name=r["name"], version=r["version"], state=r["state"],
                                              reason=r["reason"])
        for r in rows])
