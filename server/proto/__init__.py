"""Generated protobuf/gRPC code for the project's own services (proto/). Regenerate with proto/generate.sh."""
