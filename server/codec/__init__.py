"""Wire formats <-> `server.types`: pure functions, no I/O, so every malformed input can be unit-tested.

Each transport has its own modules (`http_*` for KServe v2 REST + the binary tensor extension, `grpc_*` for the
protobuf messages); all of them raise `ServingError(INVALID_ARGUMENT, ...)` naming the offending field.
"""
