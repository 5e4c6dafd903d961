"""Fire many requests at once at a real server, to fill queues: '' for each success, the error message otherwise.

Only rejections with the error table's "unavailable" status (503 / UNAVAILABLE) are answers a burst expects;
anything else fails the test at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from tests.support.server import ServerProcess

UNAVAILABLE = {"http": "503", "grpc": "StatusCode.UNAVAILABLE"}


async def burst(server: ServerProcess, model: str, count: int, width: int, protocol: str = "http",
                **parameters: int) -> list[str]:
    """`count` concurrent requests of one [1, width] FP32 row named INPUT0; `parameters` go with each request."""
    module: Any = http_aio if protocol == "http" else grpc_aio
    client = (http_aio.InferenceServerClient(server.http_url, conn_limit=count) if protocol == "http"
              else grpc_aio.InferenceServerClient(server.grpc_url))
    x = np.ones((1, width), np.float32)

    async def one() -> str:
        tensor = module.InferInput("INPUT0", [1, width], "FP32")
        tensor.set_data_from_numpy(x)
        try:
            await client.infer(model, [tensor], **parameters)
            return ""
        except InferenceServerException as exc:
            assert exc.status() == UNAVAILABLE[protocol], exc
            return exc.message()

    try:
        return await asyncio.gather(*(one() for _ in range(count)))
    finally:
        await client.close()
