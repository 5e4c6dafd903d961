"""Experiment, not a product mode: gRPC ModelInfer served by a front-end process of its own, so that grpc.aio's
per-RPC work no longer shares a GIL with the dataplane, the batcher and the compute thread.

Two processes: `backend` runs the real twofour dataplane (real dynamic batcher, real reference MLP, the same
`InferenceServicer.infer` the gRPC transport calls) behind a Unix socket; `front` is a bare grpc.aio server whose
only method, ModelInfer, forwards the raw request bytes over that socket and returns the raw response bytes (no
protobuf work in the front). Frames are `<u32 length><u32 id>` + payload; answers may come back in any order.

It handles only unary ModelInfer, no errors, cancellation, streaming, health or shutdown drain: it exists to measure
whether taking the GIL off the gRPC critical path lifts throughput (bench/RESULTS.md, "Serving, session 2").

    python bench/grpc_front_experiment.py --grpc-port 19600
    # prints "pid <launcher pid> grpc 127.0.0.1:19600"; pass that pid to loadgen.py --server-pid (it sums children)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRAME = struct.Struct("<II")  # payload length, request id


async def backend(socket_path: str, variant: str) -> None:
    """The dataplane behind the socket: one task per request, so the dynamic batcher can merge them."""
    import torch
    from tritonclient.grpc import service_pb2 as pb

    from bench.serve_bench import VARIANTS, build_repository
    from server.app import build_app
    from server.settings import Settings
    from server.transport.grpc import InferenceServicer

    torch.set_num_threads(1)
    repository = build_repository(Path(tempfile.mkdtemp(prefix="twofour-front-exp-")), VARIANTS[variant])
    app = build_app(Settings(model_repository=repository))
    await app.registry.load_all()
    app.dataplane.starting = False
    servicer = InferenceServicer(app.dataplane, app.control)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer(request_id: int, data: bytes) -> None:
            body = (await servicer.infer(pb.ModelInferRequest.FromString(data))).SerializeToString()
            writer.write(FRAME.pack(len(body), request_id) + body)

        tasks: set[asyncio.Task[None]] = set()
        while True:
            try:
                length, request_id = FRAME.unpack(await reader.readexactly(FRAME.size))
                data = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                return
            task = asyncio.get_running_loop().create_task(answer(request_id, data))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_unix_server(connection, socket_path)
    await server.serve_forever()


async def front(socket_path: str, port: int) -> None:
    """grpc.aio with one raw-bytes method that forwards to the backend over one multiplexed connection."""
    import grpc

    reader, writer = await asyncio.open_unix_connection(socket_path)
    waiting: dict[int, asyncio.Future[bytes]] = {}
    ids = itertools.count(1)

    async def receive() -> None:
        while True:
            length, request_id = FRAME.unpack(await reader.readexactly(FRAME.size))
            data = await reader.readexactly(length)
            future = waiting.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(data)

    receiver = asyncio.get_running_loop().create_task(receive())

    async def model_infer(request: bytes, context: Any) -> bytes:
        request_id = next(ids) & 0xFFFFFFFF
        future = waiting[request_id] = asyncio.get_running_loop().create_future()
        writer.write(FRAME.pack(len(request), request_id) + request)
        return await future

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await server.wait_for_termination()
    finally:
        receiver.cancel()


def front_sync(socket_path: str, port: int, workers: int) -> None:
    """The same forwarding from grpcio's sync server: a thread per RPC, each with its own blocking connection to
    the backend (no multiplexing needed; the blocking calls release the GIL)."""
    import socket
    import threading
    from concurrent import futures

    import grpc

    local = threading.local()

    def connection() -> socket.socket:
        sock = getattr(local, "sock", None)
        if sock is None:
            sock = local.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(socket_path)
        return sock

    def receive(sock: socket.socket, size: int) -> bytes:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            count = sock.recv_into(view[got:])
            if not count:
                raise ConnectionError("backend closed the connection")
            got += count
        return bytes(buffer)

    def model_infer(request: bytes, context: Any) -> bytes:
        sock = connection()
        sock.sendall(FRAME.pack(len(request), 0) + request)
        length, _ = FRAME.unpack(receive(sock, FRAME.size))
        return receive(sock, length)

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def launch(port: int, variant: str, front_kind: str) -> None:
    """Start both roles as children of this process and wait; SIGTERM stops both."""
    socket_path = os.path.join(tempfile.mkdtemp(prefix="twofour-front-exp-"), "dataplane.sock")
    me = [sys.executable, __file__, "--socket", socket_path]
    children = [subprocess.Popen([*me, "--role", "backend", "--variant", variant])]
    while not os.path.exists(socket_path):
        if children[0].poll() is not None:
            raise SystemExit("backend exited before it was ready")
        time.sleep(0.2)
    children.append(subprocess.Popen([*me, "--role", "front", "--front", front_kind, "--grpc-port", str(port)]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"pid {os.getpid()} grpc 127.0.0.1:{port}", flush=True)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
            child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["launch", "backend", "front"], default="launch")
    parser.add_argument("--grpc-port", type=int, default=19600)
    parser.add_argument("--variant", default="batched", help="a bench/serve_bench.py VARIANTS key")
    parser.add_argument("--socket", default="")
    parser.add_argument("--front", choices=["aio", "sync"], default="aio", help="the front's gRPC server")
    parser.add_argument("--workers", type=int, default=64, help="sync front: thread pool size")
    args = parser.parse_args()
    if args.role == "backend":
        asyncio.run(backend(args.socket, args.variant))
    elif args.role == "front" and args.front == "sync":
        front_sync(args.socket, args.grpc_port, args.workers)
    elif args.role == "front":
        asyncio.run(front(args.socket, args.grpc_port))
    else:
        launch(args.grpc_port, args.variant, args.front)


if __name__ == "__main__":
    main()
