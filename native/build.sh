#!/usr/bin/env bash
# Builds the native front (native/grpc_front/*.cc: gRPC, and HTTP with --http-address) into
# native/build/twofour-grpc-front, after running the HTTP head parser's tests (grpc_front/http_head_test.cc).
# Needs g++, pkg-config and gRPC's C++ library (Debian/Ubuntu: libgrpc++-dev, gRPC >= 1.51 for the callback
# generic API). Run as root with apt-get available, it installs whichever of those is missing first.
set -euo pipefail
cd "$(dirname "$0")"
PACKAGES=(g++ pkg-config libgrpc++-dev)

if ! command -v g++ >/dev/null || ! pkg-config --exists 'grpc++ >= 1.51' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "native: installing ${PACKAGES[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
    else
        echo "native: needs ${PACKAGES[*]} (gRPC >= 1.51); install them, or serve with --grpc-frontend python" >&2
        exit 1
    fi
fi

mkdir -p build
# the HTTP head parser's own tests first (no gRPC needed): a front that misreads requests is not built
g++ -std=c++17 -O1 -Wall -Wextra -Werror -o build/http_head_test grpc_front/http_head_test.cc grpc_front/http_head.cc
build/http_head_test
sources=()
for source in grpc_front/*.cc; do
    [[ $source == *_test.cc ]] || sources+=("$source")
done
# -Werror: a warning here is a bug in a file that runs on every request
g++ -std=c++17 -O2 -Wall -Wextra -Werror -o build/twofour-grpc-front.tmp "${sources[@]}" \
    $(pkg-config --cflags --libs 'grpc++')
mv build/twofour-grpc-front.tmp build/twofour-grpc-front
echo "native: built native/build/twofour-grpc-front (gRPC $(pkg-config --modversion 'grpc++'))" >&2
