"""Thin adapters between the network and `DataPlane`: HTTP (FastAPI/uvicorn) and gRPC (grpc.aio).

They translate wire messages with `server.codec` and failures with the one table in `server.errors`; no
inference logic lives here.
"""
