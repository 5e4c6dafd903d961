"""ModelInferRequest -> InferRequest and InferResponse -> ModelInferResponse, for the gRPC transport.

Raw tensor bytes are viewed with `np.frombuffer` (no Python lists, no copies); every size is checked against the
declared shape with integer arithmetic *before* anything is allocated, so a forged shape cannot make the server
allocate memory. Typed `contents` (the proto's repeated fields) are accepted too, as Triton does, but only for the
datatypes that have such a field: FP16 and BF16 travel only as raw bytes. BYTES travels framed in raw contents
(codec/bytes_tensor.py) or one element per `contents.bytes_contents` entry, and is held as an object array.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from server.codec import bytes_tensor
from server.codec.shapes import check_shape
from server.errors import ErrorKind, ServingError, invalid
from server.types import BYTES, DATATYPES, WIRE_DATATYPES, InferRequest, InferResponse, InferTensor, RequestedOutput

# Wire datatype -> (InferTensorContents field, numpy dtype of that repeated field). Narrow integer types share
# the 32-bit fields, so their values are range-checked before the cast (Triton rejects them too).
TYPED_FIELDS: dict[str, tuple[str, np.dtype]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
}
CONTENT_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
                  "fp32_contents", "fp64_contents", "bytes_contents")
SHARED_MEMORY_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


# -- parameters -----------------------------------------------------------------------------------------------
def param_value(param: pb.InferParameter) -> Any:
    """An InferParameter as the Python value it carries (None when no choice is set)."""
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def params_to_dict(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: param_value(value) for key, value in params.items()}


def set_params(target: Any, values: Mapping[str, Any]) -> None:
    """Fill a protobuf `map<string, InferParameter>` from Python values (bool before int: bool is an int)."""
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value > np.iinfo(np.int64).max:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def _reject_shared_memory(params: Mapping[str, Any], what: str) -> None:
    if any(key in params for key in SHARED_MEMORY_PARAMS):
        raise ServingError(ErrorKind.UNIMPLEMENTED,
                           f"{what} uses shared memory, which this server does not support; send the data inline")


# -- decoding -------------------------------------------------------------------------------------------------
def _datatype(tensor: pb.ModelInferRequest.InferInputTensor) -> str:
    datatype = tensor.datatype
    if datatype not in WIRE_DATATYPES:
        raise invalid(f"input {tensor.name!r}: unknown datatype {datatype!r}; expected one of {list(WIRE_DATATYPES)}")
    return datatype


def _from_raw(name: str, datatype: str, count: int, raw: bytes) -> np.ndarray:
    if datatype == BYTES:  # framed elements, as tritonclient's serialize_byte_tensor writes them
        return bytes_tensor.deserialize(raw, count, name)
    dtype = DATATYPES[datatype][0]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid(f"input {name!r}: {datatype} shape with {count} elements needs {expected} bytes, "
                      f"but its raw_input_contents holds {len(raw)}")
    if datatype == "BOOL":
        as_bytes = np.frombuffer(raw, dtype=np.uint8)
        if count and as_bytes.max() > 1:
            raise invalid(f"input {name!r}: BOOL bytes must be 0 or 1")
    return np.frombuffer(raw, dtype=dtype)


def _present_fields(contents: pb.InferTensorContents) -> list[str]:
    return [f for f in CONTENT_FIELDS if len(getattr(contents, f))]


def _from_typed(name: str, datatype: str, count: int, contents: pb.InferTensorContents) -> np.ndarray:
    present = _present_fields(contents)
    if datatype == BYTES:
        return _from_bytes_contents(name, count, contents, present)
    typed = TYPED_FIELDS.get(datatype)
    if typed is None:
        raise invalid(f"input {name!r}: {datatype} data can only be sent in raw_input_contents")
    field, source = typed
    wrong = [f for f in present if f != field]
    if wrong:
        raise invalid(f"input {name!r}: {datatype} data belongs in contents.{field}, not contents.{wrong[0]}")
    values = getattr(contents, field)
    if len(values) != count:
        raise invalid(f"input {name!r}: shape holds {count} elements but contents.{field} has {len(values)}")
    array = np.fromiter(values, dtype=source, count=count)
    target = DATATYPES[datatype][0]
    if target != source and count:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise invalid(f"input {name!r}: a value in contents.{field} does not fit {datatype} "
                          f"({info.min}..{info.max})")
        array = array.astype(target)
    return array


def _from_bytes_contents(name: str, count: int, contents: pb.InferTensorContents, present: list[str]) -> np.ndarray:
    """BYTES in `contents.bytes_contents`: one repeated entry per element, unframed."""
    bytes_tensor.check_count(count, name)
    wrong = [f for f in present if f != "bytes_contents"]
    if wrong:
        raise invalid(f"input {name!r}: BYTES data belongs in contents.bytes_contents, not contents.{wrong[0]}")
    values = contents.bytes_contents
    if len(values) != count:
        raise invalid(f"input {name!r}: shape holds {count} elements but contents.bytes_contents has {len(values)}")
    array = np.empty(count, dtype=bytes_tensor.OBJECT)
    array[:] = list(values)
    return array


def _empty(datatype: str) -> np.ndarray:
    return np.empty(0, dtype=bytes_tensor.OBJECT if datatype == BYTES else DATATYPES[datatype][0])


def decode_infer_request(request: pb.ModelInferRequest, max_elements: int = 2**40) -> InferRequest:
    """Validate the wire form and view its tensors; the dataplane checks them against the model's config.

    `max_elements` (the server's `max_request_elements`) bounds each declared shape before anything is sized
    from it; the default only keeps numpy's own limits for callers without settings (tests, benchmarks)."""
    raw = request.raw_input_contents
    inputs = request.inputs
    if raw and len(raw) != len(inputs):
        raise invalid(f"request has {len(raw)} raw_input_contents for {len(inputs)} inputs; "
                      "send raw data for every input or for none")
    decoded: list[InferTensor] = []
    for i, tensor in enumerate(inputs):
        params = params_to_dict(tensor.parameters)
        _reject_shared_memory(params, f"input {tensor.name!r}")
        datatype = _datatype(tensor)
        shape, count = check_shape(tensor.shape, tensor.name, max_elements)
        has_typed = tensor.HasField("contents") and bool(_present_fields(tensor.contents))
        if raw:
            if has_typed:
                raise invalid(f"input {tensor.name!r} has both typed contents and raw_input_contents; "
                              "use one form for all inputs")
            data = _from_raw(tensor.name, datatype, count, raw[i])
        elif has_typed:
            data = _from_typed(tensor.name, datatype, count, tensor.contents)
        elif count == 0:
            data = _empty(datatype)
        else:
            raise invalid(f"input {tensor.name!r} carries no data (neither contents nor raw_input_contents)")
        decoded.append(InferTensor(tensor.name, datatype, shape, data.reshape(shape), params))
    outputs: list[RequestedOutput] = []
    for out in request.outputs:
        params = params_to_dict(out.parameters)
        _reject_shared_memory(params, f"output {out.name!r}")
        outputs.append(RequestedOutput(out.name, params))
    return InferRequest(model_name=request.model_name, model_version=request.model_version, inputs=decoded,
                        outputs=outputs, id=request.id, parameters=params_to_dict(request.parameters))


# -- encoding -------------------------------------------------------------------------------------------------
def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    """Outputs as raw_output_contents (one `tobytes` each: the only copy protobuf leaves us)."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=t.shape)
                 for t in response.outputs],
        raw_output_contents=[raw_bytes(t.data, t.datatype) for t in response.outputs],
    )
    if response.parameters:
        set_params(message.parameters, response.parameters)
    return message


def _contiguous(array: np.ndarray) -> np.ndarray:
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's raw contents: its little-endian bytes, or for BYTES its framed elements (what as_numpy reads)."""
    if datatype == BYTES:
        return bytes_tensor.serialize(array)
    return _contiguous(array).tobytes()


def encode_infer_request(request: InferRequest) -> pb.ModelInferRequest:
    """The inverse of `decode_infer_request` (raw form); used by tests and benchmarks to build wire messages."""
    message = pb.ModelInferRequest(model_name=request.model_name, model_version=request.model_version,
                                   id=request.id)
    for tensor in request.inputs:
        entry = message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        set_params(entry.parameters, tensor.parameters)
        message.raw_input_contents.append(raw_bytes(tensor.data, tensor.datatype))
    for out in request.outputs:
        set_params(message.outputs.add(name=out.name).parameters, out.parameters)
    set_params(message.parameters, request.parameters)
    return message
