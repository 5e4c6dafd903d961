"""The one check of a client-declared tensor shape, shared by the HTTP and gRPC codecs.

Why it runs before anything is sized from the shape: a forged shape (negative, non-integer, absurd rank, or 10^24
elements) must become a clear 400/413 before numpy or the buffer code ever sees it, whichever transport it came on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.errors import invalid, too_large

MAX_DIMS = 32  # far beyond any real model; numpy allows 64, and each dimension costs work to check


def check_shape(shape: Sequence[Any], name: str, max_elements: int) -> tuple[tuple[int, ...], int]:
    """(shape, element count); refuses non-integer, negative, too-many and oversized dimensions."""
    dims = list(shape)
    if len(dims) > MAX_DIMS:
        raise invalid(f"input {name!r}: shape has {len(dims)} dimensions; at most {MAX_DIMS} are allowed")
    count = 1
    nonzero = 1  # numpy refuses shapes whose non-zero dims overflow, even when a 0 makes the tensor empty
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise invalid(f"input {name!r}: shape {dims} holds a non-integer dimension {dim!r}")
        if dim < 0:
            raise invalid(f"input {name!r}: shape {dims} has a negative dimension")
        count *= dim  # Python ints: no overflow, however large the claimed dimensions
        nonzero *= max(dim, 1)
    if count > max_elements or nonzero > max_elements:
        raise too_large(f"input {name!r}: shape {dims} has {count or nonzero} elements; the limit is {max_elements}: "
                        f"a request may hold no more than {max_elements} tensor elements")
    return tuple(dims), count
