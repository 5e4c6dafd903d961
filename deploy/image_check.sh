#!/usr/bin/env bash
# make image-check: build the CPU image with podman from a base made on this machine, then run it and check it
# (deploy/image_check.py). Why each step is what it is, and the sandbox workarounds: docs/deploy.md.
#
#   bash deploy/image_check.sh            # as root; PYTHON: an interpreter with the project's deps (tritonclient,
#                                         # torch), default .venv/bin/python; IMAGE, BASE_IMAGE: the tags to use
#   REBUILD_BASE=1 bash deploy/image_check.sh   # debootstrap the base again even if it exists
#   PRUNE=1 ...                           # drop the build's intermediate (untagged) images afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/twofour:0.1.0-cpu}
BASE_IMAGE=${BASE_IMAGE:-localhost/twofour-base:bookworm}
PYTHON=${PYTHON:-.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
NEED_GB=8  # base (~0.2 GB) + build stages (~3.5 GB) + the image (~1.4 GB), with room to spare
log() { echo "image-check: $*" >&2; }

# 1. tools: Debian's podman (buildah inside, for --isolation=chroot), runc (see image_check.py's RUN_FLAGS),
#    debootstrap for the base. Installed like native/build.sh installs its dependencies: as root, with apt-get.
missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        log "needs ${missing[*]} (Debian: apt-get install podman runc debootstrap), run as root"; exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
[ "$(id -u)" = 0 ] || { log "run as root: podman's chroot isolation and the base's debootstrap need it"; exit 1; }
"$PYTHON" -c 'import tritonclient.grpc, tritonclient.http, torch' \
    || { log "PYTHON=$PYTHON lacks the project's dependencies (make setup, or PYTHON=...)"; exit 1; }

storage=$(podman info --format '{{.Store.GraphRoot}}')
mkdir -p "$storage"
free_gb=$(df -P -BG "$storage" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
[ "$free_gb" -ge "$NEED_GB" ] || { log "$storage has ${free_gb} GB free, needs ${NEED_GB}"; exit 1; }

# 2. the base: Docker Hub may be unreachable (it is here), so python:3.11-slim-bookworm is replaced by the same
#    distribution made locally: a minimal debootstrap of bookworm with Debian's python3.11, venv and pip, plus
#    python-is-python3 (the Dockerfile and its HEALTHCHECK call `python`, as the official image provides it).
if [ -n "${REBUILD_BASE:-}" ] || ! podman image exists "$BASE_IMAGE"; then
    rootfs=$(mktemp -d /var/tmp/twofour-base.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap bookworm into $rootfs (about a minute)"
    nice -n 10 debootstrap --variant=minbase \
        --include=python3.11,python3-venv,python3-pip,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    # the official image's sources: its security updates too (the stages apt-get install gRPC from them)
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
        "$MIRROR" "$MIRROR" "$MIRROR" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE"
    rm -rf "$rootfs"
    trap - EXIT
fi
# 3. the build, with this machine's pip sources (deploy/pip_sources.py: served on loopback, given as a pip.conf
#    build secret) and --format docker, since the OCI format has no HEALTHCHECK and podman would drop it.
log "building $IMAGE"
start=$SECONDS
nice -n 10 "$PYTHON" deploy/pip_sources.py podman build --isolation=chroot --format docker --build-arg VARIANT=cpu \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" -t "$IMAGE" .
log "built $IMAGE in $((SECONDS - start)) s"

# 4. run it and check it
"$PYTHON" deploy/image_check.py "$IMAGE"
if [ -n "${PRUNE:-}" ]; then
    podman image prune --force >/dev/null  # the untagged stage images; the base and the image stay
fi
