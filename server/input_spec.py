"""What a model config says about a request's tensors, read out of the protobuf once per loaded config.

Why: validating a request against its `ModelConfig` touched a dozen protobuf fields and an enum-name lookup per
input on every request; py-spy showed that at 17% of the server loop's busy time under gRPC load. The spec is a
plain frozen value, built on first use of a config object and reused until the config is replaced (reload).
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from server.types import CONFIG_TO_WIRE


def wire_datatype(data_type: int) -> str:
    return CONFIG_TO_WIRE[mc.DataType.Name(data_type)]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    datatype: str  # wire name, e.g. "FP32"
    want: tuple[int, ...]  # full shape with -1 for variable dims, the batch dim included when batched
    optional: bool


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    max_batch_size: int
    inputs: dict[str, TensorSpec]
    required: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def model_spec(config: mc.ModelConfig) -> ModelSpec:
    lead = (-1,) if config.max_batch_size > 0 else ()
    inputs = {t.name: TensorSpec(wire_datatype(t.data_type), lead + tuple(t.dims), t.optional) for t in config.input}
    return ModelSpec(config.name, config.max_batch_size, inputs,
                     tuple(n for n, t in inputs.items() if not t.optional), tuple(t.name for t in config.output))


class SpecCache:
    """Specs by config object. Keyed by identity and holding the config, so an id is never reused while cached;
    a reload brings a new config object, and the cache is emptied when it grows past `limit` (many reloads)."""

    def __init__(self, limit: int = 256) -> None:
        self._specs: dict[int, tuple[mc.ModelConfig, ModelSpec]] = {}
        self._limit = limit

    def get(self, config: mc.ModelConfig) -> ModelSpec:
        hit = self._specs.get(id(config))
        if hit is not None and hit[0] is config:
            return hit[1]
        if len(self._specs) >= self._limit:
            self._specs.clear()
        spec = model_spec(config)
        self._specs[id(config)] = (config, spec)
        return spec
