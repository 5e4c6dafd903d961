"""BYTES tensors: the 4-byte length framing that tritonclient and Triton use on every binary path.

A BYTES tensor travels (HTTP binary extension, gRPC `raw_input_contents` / `raw_output_contents`) as its elements
in C order, each a little-endian uint32 length and then that many bytes, exactly as
`tritonclient.utils.serialize_byte_tensor` writes it and `deserialize_bytes_tensor` reads it.

Internally (agreed across the server) a decoded BYTES tensor is a numpy array of dtype=object whose elements are
Python `bytes`, in the request's shape. It never becomes a torch tensor: text preprocessing turns it into tokens.
Every decode checks the framing against the declared element count, so a length that runs past the data, a
truncated prefix, trailing bytes or a wrong count is a 400 naming the element, never an over-read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from server.errors import invalid, too_large

PREFIX = struct.Struct("<I")
OBJECT = np.dtype(object)
# Strings per BYTES tensor. Why a bound of its own: framing is sequential, so decoding costs 0.6-0.9 us of Python
# per element (bench/bytes_codec.py) on the thread that decodes (the event loop, or a front connection's reader),
# and a 64 MiB body of empty strings would be 16 million of them. 2**18 is far above any batch of text, and
# decodes in about 0.2 s on this project's shared 2-core machine.
MAX_ELEMENTS = 1 << 18


def check_count(count: int, name: str) -> None:
    """Refuse (413) a BYTES shape with more elements than a request may carry, before decoding any of them."""
    if count > MAX_ELEMENTS:
        raise too_large(f"input {name!r}: BYTES shape holds {count} elements; a request may carry at most "
                        f"{MAX_ELEMENTS} strings per tensor")


def is_bytes_array(value: Any) -> bool:
    """Whether `value` is a decoded BYTES tensor (a numpy object array), as opposed to a torch tensor."""
    return isinstance(value, np.ndarray) and value.dtype == OBJECT


def deserialize(raw: bytes | bytearray | memoryview, count: int, name: str) -> np.ndarray:
    """The flat object array of `count` bytes elements framed in `raw`; refuses anything but exact framing.

    The loop is the cost (framing is sequential): one copy of the data into `bytes` first makes each element a
    plain slice, and local names keep the per-element work to an unpack, a compare and a slice."""
    check_count(count, name)
    data = raw if isinstance(raw, bytes) else bytes(raw)
    size = len(data)
    if count * PREFIX.size > size:  # every element needs at least its prefix: refuse before looping
        raise invalid(f"input {name!r}: BYTES shape holds {count} elements, which need at least "
                      f"{count * PREFIX.size} bytes of length prefixes, but the data has {size} bytes")
    values: list[bytes] = [b""] * count
    unpack = PREFIX.unpack_from
    offset = 0
    index = 0
    try:
        for index in range(count):
            (length,) = unpack(data, offset)
            offset += 4
            end = offset + length
            if end > size:
                raise invalid(f"input {name!r}: BYTES element {index} claims {length} bytes at byte {offset}, "
                              f"which runs past the end of its {size}-byte data")
            values[index] = data[offset:end]
            offset = end
    except struct.error:
        raise invalid(f"input {name!r}: BYTES element {index}: its 4-byte length prefix is truncated "
                      f"(the data ends at byte {size})") from None
    if offset != size:
        raise invalid(f"input {name!r}: {size - offset} bytes follow the last of its {count} BYTES elements; "
                      "the shape and the serialized elements disagree")
    out = np.empty(count, dtype=OBJECT)
    out[:] = values
    return out


def serialize(array: np.ndarray) -> bytes:
    """The framed bytes of a BYTES tensor (elements bytes, or str encoded as UTF-8, as tritonclient does)."""
    parts: list[bytes] = []
    for value in _elements(array):
        parts.append(PREFIX.pack(len(value)))
        parts.append(value)
    return b"".join(parts)


def _elements(array: np.ndarray) -> Iterable[bytes]:
    for value in np.asarray(array, dtype=OBJECT).reshape(-1):
        yield value if isinstance(value, bytes) else str(value).encode("utf-8")


def from_strings(values: Iterable[Any], count: int, name: str) -> np.ndarray:
    """The object array of UTF-8 bytes for JSON strings (each element must be a JSON string)."""
    out = np.empty(count, dtype=OBJECT)
    index = 0
    for index, value in enumerate(values):
        if type(value) is not str:
            raise invalid(f"input {name!r}: BYTES data must be JSON strings; element {index} is "
                          f"{type(value).__name__}")
        try:
            out[index] = value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate escape (\\ud800): not a Unicode scalar value
            raise invalid(f"input {name!r}: BYTES element {index} is not valid Unicode text ({exc.reason}); "
                          "send arbitrary bytes as binary tensor data") from None
    return out


def to_strings(array: np.ndarray, name: str) -> list[str]:
    """The elements as str for a JSON response; bytes that are not UTF-8 cannot be JSON strings."""
    out: list[str] = []
    for index, value in enumerate(_elements(array)):
        try:
            out.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise invalid(f"output {name!r}: BYTES element {index} is not valid UTF-8, which JSON cannot carry; "
                          "request it as binary (outputs[].parameters.binary_data = true)") from None
    return out
