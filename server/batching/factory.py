"""Choose the scheduler a model's config asks for, and say out loud which config fields it does not honour."""

from __future__ import annotations

import logging

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.direct import DirectScheduler
from server.batching.work import Scheduler
from server.metrics import ModelRecorder
from server.runtime.base import Runtime

log = logging.getLogger("twofour.batching")


def instance_count(config: mc.ModelConfig) -> int:
    """Total executors across the config's instance groups (Triton: one per instance)."""
    return max(1, sum(group.count for group in config.instance_group))


def create_scheduler(config: mc.ModelConfig, runtime: Runtime, recorder: ModelRecorder) -> Scheduler:
    """Dynamic batching when the config enables it, otherwise one request per execution."""
    if config.HasField("dynamic_batching") and config.max_batch_size > 0:
        from server.batching.batcher import DynamicBatcher

        if config.dynamic_batching.preserve_ordering:
            # Warn rather than refuse: configs written for Triton keep loading, and unary requests (each with its
            # own response) behave the same; only the order of responses on one stream differs.
            log.warning("model %s: dynamic_batching.preserve_ordering is not supported and is ignored: responses "
                        "on one ModelStreamInfer stream may arrive out of request order (match them by request id)",
                        config.name)

        return DynamicBatcher(config, runtime, recorder, instance_count(config))
    return DirectScheduler(runtime, recorder, instance_count(config))
