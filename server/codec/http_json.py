"""JSON for KServe v2 REST: parse documents, decode JSON tensor data in one numpy call, encode outputs.

orjson is used because the infer path parses a header and, for JSON tensors, long number lists on every request;
it is several times faster than the stdlib and serialises numpy arrays natively (no Python lists on the way out).
JSON tensor data may be flat or nested (the spec allows both); it is converted with one `np.asarray` and then
checked, so a lying or ragged list costs one failed conversion, never a per-element Python loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from server.codec import bytes_tensor
from server.errors import invalid
from server.types import DATATYPES, WIRE_DATATYPES

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# Types that JSON cannot carry faithfully (Triton refuses them too): they travel as binary tensor data only.
BINARY_ONLY = frozenset({"FP16", "BF16"})


def parse_object(raw: bytes | bytearray | memoryview, what: str) -> dict[str, Any]:
    """A JSON object from raw bytes; invalid UTF-8, bad syntax and non-objects are client errors."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise invalid(f"{what} must be a JSON object, got {type(document).__name__}")
    return document


def dumps(document: Any) -> bytes:
    """Serialise a response document; numpy arrays inside are written as JSON arrays."""
    return orjson.dumps(document, option=_DUMPS_OPTIONS)


def _unsupported(datatype: str, name: str) -> None:
    if datatype not in DATATYPES:
        raise invalid(f"input {name!r}: unknown datatype {datatype!r}; expected one of {list(WIRE_DATATYPES)}")


def decode_json_tensor(data: Any, datatype: str, count: int, name: str) -> np.ndarray:
    """Flat array of `count` elements in the wire dtype from a JSON `data` value (flat or nested list)."""
    if datatype == "BYTES":
        return _json_strings(data, count, name)
    _unsupported(datatype, name)
    if datatype in BINARY_ONLY:
        raise invalid(f"input {name!r}: {datatype} data cannot be sent as JSON; send it as binary tensor data "
                      "(parameters.binary_data_size)")
    if not isinstance(data, list):
        raise invalid(f"input {name!r}: 'data' must be a JSON array, got {type(data).__name__}")
    dtype = DATATYPES[datatype][0]
    try:
        array = np.asarray(data)  # inferred, then checked: an explicit dtype would parse "1.5" or truncate 1.5
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(f"input {name!r}: 'data' is not a regular array of {datatype} values: {exc}") from None
    if array.size != count:
        raise invalid(f"input {name!r}: 'data' holds {array.size} elements but the shape needs {count}")
    if dtype.kind == "f" and array.dtype.kind not in "fiu" and array.size:
        raise invalid(f"input {name!r}: {datatype} data must be JSON numbers")
    if dtype.kind != "f" and array.size:
        array = _exact_integers(data, array, dtype, datatype, name)
    return array.reshape(-1).astype(dtype, copy=False)


def _json_strings(data: Any, count: int, name: str) -> np.ndarray:
    """BYTES from JSON: a (flat or nested, regular) array of strings, each encoded as UTF-8 bytes.

    JSON text is UTF-8 by definition, so invalid UTF-8 never reaches here (the document fails to parse); a
    lone surrogate escape is refused when it is encoded. Numbers are refused, not turned into their text."""
    bytes_tensor.check_count(count, name)
    if not isinstance(data, list):
        raise invalid(f"input {name!r}: 'data' must be a JSON array, got {type(data).__name__}")
    try:
        array = np.asarray(data, dtype=bytes_tensor.OBJECT)  # ragged nesting leaves lists as elements: refused below
    except ValueError as exc:
        raise invalid(f"input {name!r}: 'data' is not a regular array of BYTES strings: {exc}") from None
    if array.size != count:
        raise invalid(f"input {name!r}: 'data' holds {array.size} elements but the shape needs {count}")
    return bytes_tensor.from_strings(array.reshape(-1), count, name)


def _exact_integers(data: list[Any], array: np.ndarray, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    """Integers and booleans must arrive as such, in range: JSON 1.5 or 300 for UINT8 is refused, not truncated."""
    if dtype.kind == "b":
        if array.dtype.kind != "b":
            raise invalid(f"input {name!r}: BOOL data must be JSON true/false values")
        return array
    message = f"input {name!r}: {datatype} data must be JSON integers within the type's range"
    if array.dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise invalid(f"input {name!r}: value {low if low < info.min else high} is out of range for {datatype}")
        return array.astype(dtype)
    if array.dtype.kind not in "fO":  # strings, booleans
        raise invalid(message)
    # numpy found no single integer type (e.g. 0 beside 2**64-1 infers float64, losing digits): re-read the
    # original numbers one by one. Rare, so the per-element check is affordable and keeps floats out.
    values = np.asarray(data, dtype=object).reshape(-1).tolist()
    if not all(type(v) is int for v in values):
        raise invalid(message)
    try:
        return np.asarray(values, dtype=dtype)
    except OverflowError:
        raise invalid(message) from None


def encode_json_data(array: np.ndarray, datatype: str, name: str) -> np.ndarray | list[str]:
    """The flat, native-endian array orjson writes as an output's `data` list (BYTES: a list of str)."""
    if datatype == "BYTES":
        return bytes_tensor.to_strings(array, name)
    if datatype in BINARY_ONLY:
        raise invalid(f"output {name!r} is {datatype}, which JSON cannot carry; request it as binary "
                      "(outputs[].parameters.binary_data = true)")
    flat = array.reshape(-1)
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return np.ascontiguousarray(flat)
