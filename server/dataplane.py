"""The KServe v2 operations, independent of transport: health, metadata, config, statistics, infer, repository.

Transports turn wire messages into `InferRequest`s and call these methods; every failure leaves here as a
`ServingError`, which both transports translate through the one table in errors.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from server import __version__, classification
from server.admission import Admission, InFlight, int_param, requested_outputs, tensors_only, validate_inputs
from server.batching.work import WorkItem
from server.errors import ErrorKind, ServingError, as_serving_error, unavailable
from server.input_spec import SpecCache, wire_datatype
from server.metrics import Metrics, VersionStats
from server.registry import Registry
from server.settings import Settings
from server.text.preprocess import carries_text, prepare_text
from server.types import InferRequest, InferResponse, InferTensor, to_numpy

log = logging.getLogger("twofour.dataplane")

EXTENSIONS = ["model_repository", "model_repository(unload_dependents)", "schedule_policy",
              "model_configuration", "statistics", "binary_tensor_data", "parameters", "classification"]


class DataPlane:
    def __init__(self, registry: Registry, settings: Settings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.shutting_down = False
        self.starting = True  # until the initial model loads finish
        self._specs = SpecCache()
        self._in_flight = InFlight()

    # -- health and metadata ---------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once startup loads finished and until shutdown; with `strict_readiness` (Triton's flag) every
        model in the registry must also be READY. Lenient by default so one broken model never takes a whole
        replica out of its Service: the broken model is reported in the repository index and the log instead."""
        if self.shutting_down or self.starting:
            return False
        if not self.settings.strict_readiness:
            return True
        return all(e.state == "READY" for e in self.registry.entries() if e.wanted)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "twofour", "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, name: str, version: str = "") -> bool:
        if self.shutting_down:
            return False
        try:
            self.registry.resolve(name, version)
        except ServingError as exc:
            if exc.kind == ErrorKind.INVALID_ARGUMENT:
                raise
            return False
        return True

    def preserves_ordering(self, name: str, version: str = "") -> bool:
        """Whether the model's dynamic batcher must answer a stream's requests in their order (Triton's
        `preserve_ordering`); False for a model that cannot be resolved (its request fails on its own)."""
        try:
            entry, _ = self.registry.resolve(name, version)
        except ServingError:
            return False
        config = entry.config
        return config is not None and config.HasField("dynamic_batching") and \
            config.dynamic_batching.preserve_ordering

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        entry, _ = self.registry.resolve(name, version)
        assert entry.config is not None
        return entry.config

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        entry, _ = self.registry.resolve(name, version)
        config = entry.config
        assert config is not None
        batch = [-1] if config.max_batch_size > 0 else []

        def describe(tensors: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": wire_datatype(t.data_type), "shape": batch + list(t.dims)}
                    for t in tensors]

        return {"name": name, "versions": [str(v) for v in sorted(entry.versions)], "platform": "twofour",
                "inputs": describe(config.input), "outputs": describe(config.output)}

    def statistics(self, name: str = "", version: str = "") -> list[tuple[str, str, VersionStats]]:
        """(model, version, stats) for one model/version, or every loaded one when `name` is empty."""
        if name:
            entry, _ = self.registry.resolve(name, version)
            versions = [version] if version else [str(v) for v in sorted(entry.versions)]
            names = [(name, v) for v in versions]
        else:
            names = [(e.name, str(v)) for e in self.registry.entries() for v in sorted(e.versions)]
        return [(n, v, self.metrics.stats(n, v) or VersionStats()) for n, v in names]

    def sparsity_report(self, name: str, version: str = "") -> dict[str, Any]:
        """How each loaded version of a model runs: sparse/dense layers, bytes, runtime decisions."""
        entry, loaded = self.registry.resolve(name, version)
        chosen = [loaded] if version else [entry.versions[v] for v in sorted(entry.versions)]
        return {"name": name, "versions": [
            {"version": str(lv.version), "device": lv.description.device, "dtype": lv.description.dtype,
             "sparse_layers": lv.description.sparse_layers, "dense_layers": lv.description.dense_layers,
             "bytes_by_kind": lv.description.bytes_by_kind,
             "dense_equivalent_bytes": lv.description.dense_equivalent_bytes, "details": lv.description.details}
            for lv in chosen]}

    # -- inference ---------------------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResponse:
        """For transports on the event loop: admit, await the scheduler, answer."""
        # Tokenizing text is CPU work: it runs in a worker thread so the event loop keeps serving everyone else.
        admission = await asyncio.to_thread(self.admit, request) if carries_text(request) else self.admit(request)
        try:
            outputs = await admission.scheduler.infer(admission.item)
        except BaseException as exc:
            error = self.failed(admission, exc)
            if error is exc or isinstance(exc, asyncio.CancelledError):
                raise
            raise error from exc
        return self.respond(admission, outputs)

    def admit(self, request: InferRequest) -> Admission:
        """Resolve, bound and validate a request (from any thread); its WorkItem still needs a completion.

        Raises ServingError, already recorded as that model's failure where the model is known.
        """
        arrival = time.perf_counter_ns()
        if self.shutting_down:
            raise ServingError(ErrorKind.UNAVAILABLE, "server is shutting down; no new inference requests are "
                               "accepted", close_connection=True)  # HTTP: no reuse of a closing server
        entry, loaded = self.registry.resolve(request.model_name, request.model_version)
        config = entry.config
        assert config is not None
        version = str(loaded.version)
        recorder = self.metrics.recorder(request.model_name, version)
        if not self._in_flight.enter(self.settings.max_inflight_requests):
            # Load shedding: the bound keeps memory and queueing delay finite whatever the models' queue policies.
            recorder.request_done(False, time.perf_counter_ns() - arrival, ErrorKind.UNAVAILABLE.value)
            raise unavailable(f"server is at its limit of {self.settings.max_inflight_requests} requests in "
                              "flight; retry later")
        try:
            spec = self._specs.get(config)
            request = prepare_text(request, loaded.text, spec, self.settings.max_text_bytes)
            inputs, rows = validate_inputs(request, spec, self.settings.max_request_elements)
            tensors_only(inputs, spec.name)
            item = WorkItem(inputs=inputs, rows=rows, arrival_ns=arrival,
                            priority=int_param(request.parameters, "priority"),
                            timeout_ns=int_param(request.parameters, "timeout") * 1000)
            wanted = requested_outputs(request, spec)
            return Admission(request, version, recorder, loaded.scheduler, item, wanted,
                             classification.plan(wanted, spec.batched, loaded.labels))
        except BaseException as exc:
            self._in_flight.leave()
            error = as_serving_error(exc)
            recorder.request_done(False, time.perf_counter_ns() - arrival, error.kind.value)
            raise error from (None if error is exc else exc)

    def respond(self, admission: Admission, outputs: dict[str, Any]) -> InferResponse:
        """The answer to an admitted request, recorded as a success (from any thread)."""
        request = admission.request
        try:
            response = InferResponse(model_name=request.model_name, model_version=admission.version,
                                     id=request.id, outputs=[])
            for out in admission.wanted:
                array, datatype = to_numpy(outputs[out.name])
                response.outputs.append(InferTensor(out.name, datatype, tuple(array.shape), array, out.parameters))
            if admission.classes is not None:
                response.outputs = admission.classes.apply(response.outputs)
        except BaseException as exc:
            raise self.failed(admission, exc) from exc
        admission.recorder.request_done(True, time.perf_counter_ns() - admission.item.arrival_ns)
        self._in_flight.leave()
        return response

    def failed(self, admission: Admission, exc: BaseException) -> ServingError:
        """Record an admitted request's failure (a cancel included) and return the error its client gets."""
        error = ServingError(ErrorKind.CANCELLED, "request cancelled by the client") \
            if isinstance(exc, asyncio.CancelledError) else as_serving_error(exc)
        admission.recorder.request_done(False, time.perf_counter_ns() - admission.item.arrival_ns, error.kind.value)
        self._in_flight.leave()
        if error.kind == ErrorKind.INTERNAL:
            log.error("inference on %s failed", admission.request.model_name, exc_info=exc)
        return error

    # -- lifecycle ---------------------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        self.shutting_down = True

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight; False when `timeout` passed first."""
        return await asyncio.to_thread(self._in_flight.wait_idle, timeout)
