"""One exception type and one table that maps each kind of failure onto HTTP and gRPC.

Both transports translate `ServingError.kind` through `STATUS`, so a failure means the same thing on either.
Messages go to clients verbatim: they must name the problem and never leak filesystem paths or secrets.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import grpc


class ErrorKind(enum.Enum):
    """What went wrong, from the client's point of view."""

    INVALID_ARGUMENT = "invalid_argument"  # malformed request, wrong dtype/shape, unknown input, bad binary header
    NOT_FOUND = "not_found"  # unknown model / version
    UNAVAILABLE = "unavailable"  # model not ready, queue full, queue timeout, shutting down
    TOO_LARGE = "too_large"  # request exceeds a size limit
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the client's deadline passed
    UNAUTHENTICATED = "unauthenticated"  # repository control without the right token
    PERMISSION_DENIED = "permission_denied"  # repository control switched off
    UNIMPLEMENTED = "unimplemented"  # protocol extension we do not offer
    REQUEST_TIMEOUT = "request_timeout"  # the client did not finish sending its request in time
    CANCELLED = "cancelled"  # the client went away
    INTERNAL = "internal"  # a bug or a runtime failure: never the client's fault


@dataclass(frozen=True)
class Status:
    """The wire status of one error kind."""

    http: int
    grpc: grpc.StatusCode


STATUS: dict[ErrorKind, Status] = {
    ErrorKind.INVALID_ARGUMENT: Status(400, grpc.StatusCode.INVALID_ARGUMENT),
    ErrorKind.NOT_FOUND: Status(404, grpc.StatusCode.NOT_FOUND),
    ErrorKind.UNAVAILABLE: Status(503, grpc.StatusCode.UNAVAILABLE),
    ErrorKind.TOO_LARGE: Status(413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ErrorKind.DEADLINE_EXCEEDED: Status(504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ErrorKind.UNAUTHENTICATED: Status(401, grpc.StatusCode.UNAUTHENTICATED),
    ErrorKind.PERMISSION_DENIED: Status(403, grpc.StatusCode.PERMISSION_DENIED),
    ErrorKind.UNIMPLEMENTED: Status(501, grpc.StatusCode.UNIMPLEMENTED),
    ErrorKind.REQUEST_TIMEOUT: Status(408, grpc.StatusCode.DEADLINE_EXCEEDED),  # HTTP only: gRPC core reads messages
    ErrorKind.CANCELLED: Status(499, grpc.StatusCode.CANCELLED),
    ErrorKind.INTERNAL: Status(500, grpc.StatusCode.INTERNAL),
}


class ServingError(Exception):
    """The only exception the transports translate; anything else becomes INTERNAL."""

    close_connection = False  # HTTP: the connection must not be reused (unread body bytes, a closing server)

    def __init__(self, kind: ErrorKind, message: str, close_connection: bool | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        if close_connection is not None:
            self.close_connection = close_connection

    @property
    def status(self) -> Status:
        return STATUS[self.kind]


def invalid(message: str) -> ServingError:
    return ServingError(ErrorKind.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(ErrorKind.NOT_FOUND, message)


def unavailable(message: str) -> ServingError:
    return ServingError(ErrorKind.UNAVAILABLE, message)


def too_large(message: str) -> ServingError:
    return ServingError(ErrorKind.TOO_LARGE, message)


# An absolute path of two or more components (/a/b, /tmp/x/model.pt2) that starts a word: the directories say
# where the server keeps its files, which no client needs; only the last component (the file's name) is kept.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/>-])/(?:[^\s'\"/:,;()\[\]{}<>]+/)+([^\s'\"/:,;()\[\]{}<>]*)")


def redact_paths(message: str) -> str:
    """`message` with every absolute filesystem path cut down to its last component (`.../name`).

    Exception text from torch, safetensors and the OS names the full path of the file it failed on; that text
    reaches clients through INTERNAL errors and model-load reasons, so it passes through here first.
    """
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(1), message)


def as_serving_error(exc: BaseException) -> ServingError:
    """Any exception as a ServingError: ours pass through, everything else is an internal failure.

    The exception's text is kept (it is what an operator needs to match the log) but without filesystem paths.
    """
    if isinstance(exc, ServingError):
        return exc
    return ServingError(ErrorKind.INTERNAL, redact_paths(f"internal error: {type(exc).__name__}: {exc}"))
