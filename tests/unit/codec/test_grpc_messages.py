"""Dataplane answers -> GRPCInferenceService messages: every statistics field lands where tritonclient reads it."""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb

from server.codec import grpc_messages as messages
from server.metrics import BatchStat, DurationStat, VersionStats


def test_statistics_fields_are_copied_one_to_one() -> None:
    stats = VersionStats(last_inference_ms=1234, inference_count=7, execution_count=3,
                         success=DurationStat(5, 500), fail=DurationStat(2, 20), queue=DurationStat(5, 50),
                         compute_input=DurationStat(5, 11), compute_infer=DurationStat(5, 22),
                         compute_output=DurationStat(5, 33),
                         batch={4: BatchStat(DurationStat(1, 1), DurationStat(1, 2), DurationStat(1, 3)),
                                1: BatchStat(DurationStat(2, 4), DurationStat(2, 5), DurationStat(2, 6))})
    wire = pb.ModelStatisticsResponse.FromString(
        messages.statistics_response([("m", "1", stats)]).SerializeToString())
    (row,) = wire.model_stats
    assert (row.name, row.version, row.last_inference, row.inference_count, row.execution_count) == \
        ("m", "1", 1234, 7, 3)
    s = row.inference_stats
    assert [(d.count, d.ns) for d in (s.success, s.fail, s.queue, s.compute_input, s.compute_infer,
                                      s.compute_output)] == [(5, 500), (2, 20), (5, 50), (5, 11), (5, 22), (5, 33)]
    assert [b.batch_size for b in row.batch_stats] == [1, 4]
    assert (row.batch_stats[0].compute_infer.count, row.batch_stats[0].compute_infer.ns) == (2, 5)
    assert row.batch_stats[1].compute_output.ns == 3


def test_metadata_and_index_messages() -> None:
    meta = messages.model_metadata({"name": "m", "versions": ["1", "2"], "platform": "twofour",
                                    "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 16]}],
                                    "outputs": [{"name": "Y", "datatype": "BF16", "shape": [-1, 4]}]})
    assert list(meta.versions) == ["1", "2"] and list(meta.inputs[0].shape) == [-1, 16]
    assert meta.outputs[0].datatype == "BF16"
    server = messages.server_metadata({"name": "twofour", "version": "0.1.0", "extensions": ["statistics"]})
    assert list(server.extensions) == ["statistics"]
    index = messages.repository_index([{"name": "m", "version": "1", "state": "READY", "reason": ""},
                                       {"name": "b", "version": "", "state": "UNAVAILABLE", "reason": "bad"}])
    assert [(m.name, m.state, m.reason) for m in index.models] == [("m", "READY", ""), ("b", "UNAVAILABLE", "bad")]
