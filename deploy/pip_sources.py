"""Run `podman build` with this machine's pip sources: python deploy/pip_sources.py podman build [ARGS...] CONTEXT

Why: the Dockerfile's defaults (PyPI + PyTorch's CPU index) suit a normal Docker user, but a builder may resolve
packages elsewhere: a mirror, local `file://` indexes, a find-links directory holding the CPU torch wheel (PyPI's
own torch is a multi-GB CUDA build), a TLS-intercepting proxy whose CA only the host's bundle has. Rather than
write one machine's paths into the Dockerfile, this reads what the host's pip itself uses (`pip config list`:
config files and PIP_* variables, later origins winning, as pip applies them) and hands the build an equivalent
pip.conf as the build secret `pip.conf` (the CA bundle as `pip-cert`). Secrets are mounted for the one RUN that
names them, so neither they nor anything they point at reaches a layer; `podman build -v` would instead leave an
empty mount point in every layer of every stage, the final image's included.

Local directories are served read-only over HTTP on a loopback port for the build's duration (a chroot-isolated
build shares the host's network, and pip counts loopback as a secure origin), so no mount is needed at all.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

SECRETS = "/run/secrets"  # where a build's RUN --mount=type=secret,id=X finds X
INDEXES = ("index-url", "extra-index-url")
OPTIONS = (*INDEXES, "find-links", "cert")


def effective_options(config_list: str) -> dict[str, str]:
    """The last value each of OPTIONS gets in `pip config list` output (`origin.name='value'`, load order)."""
    found: dict[str, str] = {}
    for line in config_list.splitlines():
        key, sep, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if sep and name in OPTIONS:
            found[name] = value.strip().strip("'\"")
    return found


def local_path(location: str) -> Path | None:
    """The host path a pip location names, or None for a remote URL."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    path = Path(unquote(parsed.path))
    if not path.is_absolute() or not path.exists():
        raise SystemExit(f"pip_sources: pip location {location!r} is not an existing absolute path")
    return path


class Served:
    """Local directories published under one loopback URL each (a tree of symlinks behind http.server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.count = 0

    def publish(self, directory: Path) -> str:
        self.count += 1
        (self.root / str(self.count)).symlink_to(directory)
        return f"{self.base}/{self.count}"

    def __enter__(self) -> "Served":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


def rewrite(location: str, option: str, served: Served) -> str:
    path = local_path(location)
    if path is None:
        return location
    if option in INDEXES:  # index pages link to their files relatively (../../files/x.whl from simple/x/)
        return f"{served.publish(path.parent)}/{path.name}/"
    return served.publish(path) + "/"  # a find-links directory: http.server's listing is a page of links


def build_config(options: dict[str, str], served: Served) -> tuple[str, Path | None]:
    """The build's pip.conf text, and the CA bundle to pass as the `pip-cert` secret (if the host sets one)."""
    lines = ["[global]"]
    cert = None
    for option in OPTIONS:
        if option not in options:
            continue
        if option == "cert":
            cert = local_path(options[option])
            lines.append(f"cert = {SECRETS}/pip-cert")
        else:
            lines.append(f"{option} = " + " ".join(rewrite(loc, option, served) for loc in options[option].split()))
    return "\n".join(lines) + "\n", cert


def main(argv: list[str]) -> int:
    if argv[:2] != ["podman", "build"]:
        raise SystemExit(__doc__)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="twofour-pip-") as scratch:
        tree = Path(scratch) / "served"
        tree.mkdir()
        with Served(tree) as served:
            options = effective_options(listed)
            config, cert = build_config(options, served)
            (Path(scratch) / "pip.conf").write_text(config)
            flags = [f"--secret=id=pip.conf,src={scratch}/pip.conf"] if options else []  # none: the defaults
            flags += [f"--secret=id=pip-cert,src={cert}"] if cert else []
            print(f"pip_sources: the build's pip.conf:\n{config if options else '(none)'}", file=sys.stderr)
            return subprocess.run([*argv[:2], *flags, *argv[2:]]).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
