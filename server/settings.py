"""Server settings: one pydantic-settings model, every flag also readable from a TWOFOUR_* variable.

Flag names follow Triton's (`--model-repository`, `--http-port`, ...) so operators can reuse what they know; the
CLI maps each flag onto the field of the same name, and the environment fills whatever the command line omits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
# Idle keep-alive on the public HTTP port, uvicorn's or the native front's (uvicorn's default, kept by the front)
HTTP_KEEP_ALIVE_S = 5


class Settings(BaseSettings):
    """Everything `twofour serve` can be told. Defaults are safe for a single-node production server."""

    model_config = SettingsConfigDict(env_prefix="TWOFOUR_", extra="ignore")

    model_repository: Path = Field(Path("model_repo"), description="Triton-style model repository to serve")
    host: str = Field("0.0.0.0", description="address every listener binds to")
    http_port: int = Field(8000, ge=0, le=65535, description="KServe v2 HTTP port (0 disables HTTP)")
    grpc_port: int = Field(8001, ge=0, le=65535, description="KServe v2 gRPC port (0 disables gRPC)")
    metrics_port: int = Field(8002, ge=0, le=65535, description="Prometheus /metrics port (0 disables metrics)")
    exit_timeout_secs: float = Field(30.0, ge=0, description="how long SIGTERM waits for in-flight requests")
    model_control_mode: Literal["none", "explicit"] = Field("none", description="none: load all; explicit: on request")
    load_model: list[str] = Field(default_factory=list, description="models to load at start in explicit mode")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when a usable GPU exists")
    dtype: Literal["auto", "float16", "bfloat16"] = Field("auto", description="GPU compute dtype (auto = fp16)")
    gpu_keep_dense: bool = Field(False, description="GPU: keep dense copies of 2:4 layers to pick per batch size")
    cpu_precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto", description="CPU: precision of the linear layers for models whose config sets no 'cpu_precision' "
        "parameter (the config wins); auto = the fastest that agrees with fp32, measured at load")
    intra_op_threads: int = Field(0, ge=0, description="torch intra-op threads on CPU (0 = torch's default)")
    strict_readiness: bool = Field(False, description="server is ready only while every loaded model is READY")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log verbosity")
    max_request_bytes: int = Field(64 * MiB, ge=1024, description="largest HTTP body / gRPC message accepted")
    body_timeout_secs: float = Field(30.0, gt=0, description="how long an HTTP request body may take to arrive "
                                     "(408 and the connection closed beyond: a stalled client cannot hold a slot)")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="largest HTTP request line + headers (431 beyond)")
    max_request_elements: int = Field(64 * MiB, ge=1, description="largest total tensor element count per request")
    max_text_bytes: int = Field(1 * MiB, ge=1, description="largest string per row of a text model's `text` input "
                                "(413 beyond; text within it is tokenized and truncated to the model's length)")
    max_inflight_requests: int = Field(1024, ge=1, description="inference requests admitted at once, all models "
                                       "together; beyond it requests are refused UNAVAILABLE/503 at once")
    grpc_frontend: Literal["auto", "native", "python", "inline"] = Field(
        "auto", description="native: the public gRPC port in a C++ front process (`make native`) that relays to the "
        "server over Unix sockets (least CPU per request, most throughput under load; one more local hop); python: "
        "the same front in Python (grpc.aio, no build needed); auto: native when its binary is found, else python; "
        "inline: gRPC inside the server process (one process, no extra hop)")
    http_frontend: Literal["auto", "native", "uvicorn"] = Field(
        "auto", description="native: the public HTTP port in the native front process too (it sends infer requests "
        "to the server as frames, as gRPC's, and relays every other request to uvicorn on a private socket); needs "
        "the native gRPC front; uvicorn: uvicorn on the public port; auto: native whenever the native front runs")
    grpc_max_concurrent_streams: int = Field(1024, ge=1, description="HTTP/2 streams per gRPC connection")
    repository_token: str = Field("", description="bearer token required for load/unload ('' = no token)")
    allow_repository_control: bool = Field(True, description="whether load/unload/index may be called at all")

    def enabled_listeners(self) -> dict[str, int]:
        """Ports that are switched on, by listener name; the app starts exactly these."""
        ports = {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}
        return {name: port for name, port in ports.items() if port}
