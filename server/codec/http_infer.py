"""KServe v2 REST inference bodies <-> `InferRequest` / `InferResponse`, JSON and binary tensors alike.

Decoding validates the document's structure field by field (the message names the field), checks every shape
before anything is sized from it, and reads tensors either from JSON `data` or from the binary region. Encoding
writes each output as binary or JSON as the request asked (per output `binary_data`, else the request's
`binary_data_output`, else JSON), exactly as Triton does, so the unmodified `tritonclient.http` reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server.codec.http_binary import (
    binary_size,
    binary_tensor,
    check_consumed,
    output_bytes,
    parse_header_length,
    split_body,
)
from server.codec.http_json import decode_json_tensor, dumps, encode_json_data, parse_object
from server.codec.shapes import check_shape
from server.errors import ErrorKind, ServingError, invalid
from server.types import WIRE_DATATYPES, InferRequest, InferResponse, InferTensor, RequestedOutput


def check_json_shape(shape: Any, name: str, max_elements: int) -> tuple[tuple[int, ...], int]:
    """A JSON `shape` must be an array; its dimensions are then checked like any transport's (codec.shapes)."""
    if not isinstance(shape, list):
        raise invalid(f"input {name!r}: 'shape' must be a JSON array of integers, got {type(shape).__name__}")
    return check_shape(shape, name, max_elements)


def _parameters(container: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = container.get("parameters", {})
    if not isinstance(parameters, dict):
        raise invalid(f"{where}: 'parameters' must be a JSON object")
    return parameters


def _flag(parameters: dict[str, Any], key: str, where: str) -> None:
    if key in parameters and not isinstance(parameters[key], bool):
        raise invalid(f"{where}: parameter {key!r} must be true or false, got {parameters[key]!r}")


def _text(document: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = document.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise invalid(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _decode_input(raw: Any, index: int, region: memoryview, offset: int, has_binary_header: bool,
                  max_elements: int) -> tuple[InferTensor, int]:
    """One input tensor and how many bytes of the binary region it used."""
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise invalid(f"{where} must be a JSON object")
    name = _text(raw, "name", where)
    datatype = _text(raw, "datatype", f"input {name!r}")
    if datatype not in WIRE_DATATYPES:
        raise invalid(f"input {name!r}: unknown datatype {datatype!r}; expected one of {list(WIRE_DATATYPES)}")
    if "shape" not in raw:
        raise invalid(f"input {name!r}: field 'shape' is missing")
    shape, count = check_json_shape(raw["shape"], name, max_elements)
    parameters = _parameters(raw, f"input {name!r}")
    if "shared_memory_region" in parameters:  # an extension we do not offer: UNIMPLEMENTED, as over gRPC
        raise ServingError(ErrorKind.UNIMPLEMENTED,
                           f"input {name!r}: shared memory inputs are not supported by this server")
    size = binary_size(parameters, name)
    if size is None:
        if "data" not in raw:
            raise invalid(f"input {name!r}: has neither 'data' nor parameters.binary_data_size")
        flat = decode_json_tensor(raw["data"], datatype, count, name)
        used = 0
    else:
        if "data" in raw:
            raise invalid(f"input {name!r}: has both 'data' and parameters.binary_data_size; send one")
        if not has_binary_header:
            raise invalid(f"input {name!r}: parameters.binary_data_size is set but the request has no "
                          "Inference-Header-Content-Length header")
        flat = binary_tensor(region, offset, size, datatype, count, name)
        used = size
    return InferTensor(name, datatype, shape, flat.reshape(shape), parameters), used


def _decode_output(raw: Any, index: int) -> RequestedOutput:
    where = f"outputs[{index}]"
    if not isinstance(raw, dict):
        raise invalid(f"{where} must be a JSON object")
    name = _text(raw, "name", where)
    parameters = _parameters(raw, f"output {name!r}")
    _flag(parameters, "binary_data", f"output {name!r}")
    return RequestedOutput(name, parameters)


def decode_infer_request(body: memoryview, header_length: str | None, model_name: str, model_version: str,
                         max_elements: int) -> InferRequest:
    """An `InferRequest` whose tensors view `body` (binary inputs) or hold the decoded JSON data."""
    length = parse_header_length(header_length, len(body))
    header, region = split_body(body, length)
    document = parse_object(header, "inference request")
    request_id = _text(document, "id", "inference request", required=False)
    parameters = _parameters(document, "inference request")
    _flag(parameters, "binary_data_output", "inference request")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise invalid("inference request: field 'inputs' must be a non-empty JSON array")
    inputs: list[InferTensor] = []
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, index, region, offset, length is not None, max_elements)
        inputs.append(tensor)
        offset += used
    check_consumed(offset, region)
    raw_outputs = document.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise invalid("inference request: field 'outputs' must be a JSON array")
    outputs = [_decode_output(raw, i) for i, raw in enumerate(raw_outputs)]
    return InferRequest(model_name=model_name, model_version=model_version, inputs=inputs, outputs=outputs,
                        id=request_id, parameters=parameters)


def encode_infer_response(response: InferResponse, binary_default: bool) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is only JSON)."""
    documents: list[dict[str, Any]] = []
    parts: list[memoryview] = []
    for out in response.outputs:
        parameters = {k: v for k, v in out.parameters.items() if k != "binary_data"}
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.parameters.get("binary_data", binary_default):
            raw = output_bytes(out.data, out.datatype)
            parameters["binary_data_size"] = len(raw)
            parts.append(raw)
        else:
            entry["data"] = encode_json_data(np.asarray(out.data), out.datatype, out.name)
        if parameters:
            entry["parameters"] = parameters
        documents.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = documents
    header = dumps(document)
    if not parts:
        return header, None
    return b"".join([header, *parts]), len(header)
