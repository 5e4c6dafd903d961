"""Fire many requests at once at a real server, to fill queues: '' for each success, the error message otherwise.

Only rejections with the error table's "unavailable" status are answers a burst expects; anything else fails the
test at once.
"""

from __future__ import annotations

import asyncio

import numpy as np
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from tests.support.server import ServerProcess


async def http_burst(server: ServerProcess, model: str, count: int, width: int, **kwargs: int) -> list[str]:
    """`count` concurrent HTTP requests of one [1, width] FP32 row named INPUT0; kwargs are request parameters."""
    client = http_aio.InferenceServerClient(server.http_url, conn_limit=count)
    x = np.ones((1, width), np.float32)

    async def one() -> str:
        tensor = http_aio.InferInput("INPUT0", [1, width], "FP32")
        tensor.set_data_from_numpy(x)
        try:
            await client.infer(model, [tensor], **kwargs)
            return ""
        except InferenceServerException as exc:
            assert exc.status() == "503", exc
            return exc.message()

    try:
        return await asyncio.gather(*(one() for _ in range(count)))
    finally:
        await client.close()
