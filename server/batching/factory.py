"""Choose the scheduler a model's config asks for.

`dynamic_batching.preserve_ordering` needs nothing here: a unary request has its own answer, and on a
ModelStreamInfer stream the order is kept where answers are sent (server/transport/grpc_stream.py).
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.direct import DirectScheduler
from server.batching.work import Scheduler
from server.metrics import ModelRecorder
from server.runtime.base import Runtime


def instance_count(config: mc.ModelConfig) -> int:
    """Total executors across the config's instance groups (Triton: one per instance)."""
    return max(1, sum(group.count for group in config.instance_group))


def create_scheduler(config: mc.ModelConfig, runtime: Runtime, recorder: ModelRecorder) -> Scheduler:
    """Dynamic batching when the config enables it, otherwise one request per execution."""
    if config.HasField("dynamic_batching") and config.max_batch_size > 0:
        from server.batching.batcher import DynamicBatcher

        return DynamicBatcher(config, runtime, recorder, instance_count(config))
    return DirectScheduler(runtime, recorder, instance_count(config))
