"""The binary tensor data extension: a JSON header, then raw tensor bytes, split without copying.

A request body is `header (Inference-Header-Content-Length bytes) + input bytes in input order`, each input's
share given by `parameters.binary_data_size`. Every size is checked against the body before any view is taken,
so a lying header is a 400, never an out-of-range read or a giant allocation. Views are `np.frombuffer` on
memoryview slices: the bytes the server received are the bytes the model reads.
"""

from __future__ import annotations

import numpy as np

from server.codec import bytes_tensor
from server.errors import invalid
from server.types import DATATYPES

HEADER_LENGTH = "inference-header-content-length"


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The JSON header's length from the HTTP header (None when absent: the whole body is JSON)."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # isdigit alone accepts '²', which int() refuses
        raise invalid(f"Inference-Header-Content-Length must be a non-negative integer, got {value[:40]!r}")
    length = int(text)
    if length == 0:
        raise invalid("Inference-Header-Content-Length is 0: the request has no JSON header")
    if length > body_length:
        raise invalid(f"Inference-Header-Content-Length {text[:40]} exceeds the {body_length}-byte request body")
    return length


def split_body(body: memoryview, header_length: int | None) -> tuple[memoryview, memoryview]:
    """(JSON header, binary region) of a request body."""
    if header_length is None:
        return body, body[len(body):]
    return body[:header_length], body[header_length:]


def binary_size(parameters: dict[str, object], name: str) -> int | None:
    """The `binary_data_size` parameter of one input, validated, or None when the input is JSON."""
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise invalid(f"input {name!r}: parameters.binary_data_size must be a non-negative integer, got {size!r}")
    return size


def binary_tensor(region: memoryview, offset: int, size: int, datatype: str, count: int, name: str) -> np.ndarray:
    """A flat array of `count` elements viewing `region[offset:offset+size]` (checked, never copied if aligned).

    BYTES data is its framed elements (codec.bytes_tensor), decoded into an object array of bytes."""
    if datatype == "BYTES":
        if offset + size > len(region):
            raise invalid(f"input {name!r}: binary data ends at byte {offset + size} of the binary region, which "
                          f"holds only {len(region)} bytes")
        return bytes_tensor.deserialize(region[offset:offset + size], count, name)
    dtype = DATATYPES[datatype][0]
    if size != count * dtype.itemsize:
        raise invalid(f"input {name!r}: binary_data_size is {size} bytes but shape and {datatype} need "
                      f"{count * dtype.itemsize}")
    if offset + size > len(region):
        raise invalid(f"input {name!r}: binary data ends at byte {offset + size} of the binary region, which "
                      f"holds only {len(region)} bytes")
    array = np.frombuffer(region[offset:offset + size], dtype=dtype)
    if not array.flags.aligned:
        array = array.copy()  # torch kernels may assume element alignment; rare: the reader aligns the header
    return array


def check_consumed(used: int, region: memoryview) -> None:
    """Every byte after the header must belong to some input: trailing bytes mean the sizes lie."""
    if used != len(region):
        raise invalid(f"binary_data_size values add up to {used} bytes but {len(region)} bytes follow the "
                      "JSON header")


def output_bytes(array: np.ndarray, datatype: str = "") -> memoryview:
    """The raw little-endian bytes of an output, for the response body (no copy when contiguous; BYTES framed)."""
    if datatype == "BYTES":
        return memoryview(bytes_tensor.serialize(array))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array.reshape(-1).view(np.uint8).data
