"""The per-config request spec (server/input_spec.py): what it reads out of a config, and when it is rebuilt."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.input_spec import SpecCache, TensorSpec, model_spec

CONFIG = """
name: "m"
max_batch_size: 8
input [{ name: "A" data_type: TYPE_FP32 dims: [3, -1] },
       { name: "B" data_type: TYPE_INT64 dims: [2] optional: true }]
output [{ name: "Y" data_type: TYPE_FP16 dims: [4] }]
"""


def config(text: str = CONFIG) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_spec_reads_datatypes_shapes_with_the_batch_dim_and_required_inputs() -> None:
    spec = model_spec(config())
    assert spec.name == "m" and spec.batched and spec.max_batch_size == 8
    assert spec.inputs == {"A": TensorSpec("FP32", (-1, 3, -1), False), "B": TensorSpec("INT64", (-1, 2), True)}
    assert spec.required == ("A",) and spec.outputs == ("Y",)
    unbatched = model_spec(config(CONFIG.replace("max_batch_size: 8", "max_batch_size: 0")))
    assert not unbatched.batched and unbatched.inputs["A"].want == (3, -1)


def test_cache_rebuilds_for_a_new_config_object_and_empties_past_its_limit() -> None:
    cache = SpecCache(limit=2)
    first = config()
    assert cache.get(first) is cache.get(first)
    reloaded = config(CONFIG.replace('dims: [2]', 'dims: [5]'))
    assert cache.get(reloaded).inputs["B"].want == (-1, 5)
    assert cache.get(first).inputs["B"].want == (-1, 2)
    third = config()
    cache.get(third)  # the third entry empties the cache first
    spec = cache.get(first)
    assert spec == model_spec(first) and spec is cache.get(first)
