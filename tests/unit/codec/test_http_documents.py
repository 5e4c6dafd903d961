"""Config and statistics JSON have Triton's shape: int64 fields as numbers, every stats section present."""

from __future__ import annotations

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from server.codec.http_documents import config_document, statistics_document
from server.metrics import BatchStat, DurationStat, VersionStats
from server.repository import parse_config, validate_config

CONFIG = """
name: "m"
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [16] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [-1, 4] }]
dynamic_batching {
  max_queue_delay_microseconds: 100
  priority_levels: 2
  priority_queue_policy { key: 1 value { default_timeout_microseconds: 5000000000 } }
}
parameters { key: "a" value { string_value: "b" } }
"""


def test_config_int64_fields_are_numbers_and_round_trip() -> None:
    config = parse_config(CONFIG)
    validate_config(config, "m")
    document = config_document(config)
    assert document["input"][0]["dims"] == [16]
    assert document["output"][0]["dims"] == [-1, 4]
    assert document["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    policy = document["dynamic_batching"]["priority_queue_policy"]["1"]
    assert policy["default_timeout_microseconds"] == 5_000_000_000
    assert document["input"][0]["data_type"] == "TYPE_FP32"  # enums by name, as Triton writes them
    assert document["max_batch_size"] == 8 and document["platform"] == ""  # defaults are shown
    assert document["parameters"] == {"a": {"string_value": "b"}}
    # the document is still valid protobuf JSON: nothing was invented or dropped
    assert json_format.ParseDict(document, mc.ModelConfig()) == config


def test_statistics_document_has_tritons_fields() -> None:
    stats = VersionStats(last_inference_ms=123, inference_count=5, execution_count=2,
                         success=DurationStat(2, 900), queue=DurationStat(2, 100),
                         batch={4: BatchStat(compute_infer=DurationStat(1, 50)), 1: BatchStat()})
    (row,) = statistics_document([("m", "1", stats)])["model_stats"]
    assert (row["name"], row["version"], row["last_inference"]) == ("m", "1", 123)
    assert (row["inference_count"], row["execution_count"]) == (5, 2)
    assert row["inference_stats"]["success"] == {"count": 2, "ns": 900}
    assert row["inference_stats"]["queue"] == {"count": 2, "ns": 100}
    assert set(row["inference_stats"]) == {"success", "fail", "queue", "compute_input", "compute_infer",
                                           "compute_output", "cache_hit", "cache_miss"}
    assert [b["batch_size"] for b in row["batch_stats"]] == [1, 4]
    assert row["batch_stats"][1]["compute_infer"] == {"count": 1, "ns": 50}
    assert statistics_document([]) == {"model_stats": []}
