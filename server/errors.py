"""One exception type and one table that maps each kind of failure onto HTTP and gRPC.

Both transports translate `ServingError.kind` through `STATUS`, so a failure means the same thing on either.
Messages go to clients verbatim: they must name the problem and never leak filesystem paths or secrets.
"""

from __future__ import annotations

import enum
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
    ErrorKind.CANCELLED: Status(499, grpc.StatusCode.CANCELLED),
    ErrorKind.INTERNAL: Status(500, grpc.StatusCode.INTERNAL),
}


class ServingError(Exception):
    """The only exception the transports translate; anything else becomes INTERNAL."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

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


def as_serving_error(exc: BaseException) -> ServingError:
    """Any exception as a ServingError: ours pass through, everything else is an internal failure."""
    if isinstance(exc, ServingError):
        return exc
    return ServingError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
