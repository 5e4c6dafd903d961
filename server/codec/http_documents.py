"""JSON documents of the non-inference REST endpoints, shaped exactly as Triton writes them.

Model config: protobuf's JSON mapping writes 64-bit integers as strings ("dims": ["16"]); Triton rewrites them
as numbers, and clients index `config["input"][0]["dims"][0]` as an int, so the same fix is applied here by
walking the message's descriptor (no guessing from values). Statistics follow Triton's ModelStatistics JSON.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server.metrics import DurationStat, VersionStats

_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _fix_int64(descriptor: Descriptor, document: dict[str, Any]) -> None:
    """Turn the string-encoded 64-bit integers of `document` (a MessageToDict of `descriptor`) into ints."""
    for key, value in document.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for item_key, item in value.items():
                if value_field.message_type is not None:
                    _fix_int64(value_field.message_type, item)
                elif value_field.type in _INT64:
                    value[item_key] = int(item)
        elif field.message_type is not None:
            for item in value if isinstance(value, list) else [value]:
                _fix_int64(field.message_type, item)
        elif field.type in _INT64:
            document[key] = [int(v) for v in value] if isinstance(value, list) else int(value)


def config_document(config: Message) -> dict[str, Any]:
    """A ModelConfig as Triton's GET .../config returns it: proto field names, defaults shown, int64 as numbers."""
    document = json_format.MessageToDict(config, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    _fix_int64(config.DESCRIPTOR, document)
    return document


def _duration(stat: DurationStat) -> dict[str, int]:
    return {"count": stat.count, "ns": stat.ns}


def statistics_document(rows: list[tuple[str, str, VersionStats]]) -> dict[str, Any]:
    """Triton's statistics JSON for (model, version, stats) rows."""
    empty = DurationStat()
    model_stats = []
    for name, version, s in rows:
        model_stats.append({
            "name": name,
            "version": version,
            "last_inference": s.last_inference_ms,
            "inference_count": s.inference_count,
            "execution_count": s.execution_count,
            "inference_stats": {
                "success": _duration(s.success), "fail": _duration(s.fail), "queue": _duration(s.queue),
                "compute_input": _duration(s.compute_input), "compute_infer": _duration(s.compute_infer),
                "compute_output": _duration(s.compute_output),
                "cache_hit": _duration(empty), "cache_miss": _duration(empty),
            },
            "response_stats": {},
            "batch_stats": [
                {"batch_size": size, "compute_input": _duration(b.compute_input),
                 "compute_infer": _duration(b.compute_infer), "compute_output": _duration(b.compute_output)}
                for size, b in sorted(list(s.batch.items()))
            ],
            "memory_usage": [],
        })
    return {"model_stats": model_stats}
