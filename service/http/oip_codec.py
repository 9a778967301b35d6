"""The Open Inference Protocol's REST framing: a JSON request (with binary tensor data after it, the binary
tensor data extension) -> pixels and the outputs asked for; the outputs -> JSON, or JSON and binary data."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.core.errors import UndecodableInput, quoted
from service.core.forward import AllOutputs
from service.core.pixels import Batch, Limits
from service.core.tensors import (
    INPUT_NAME,
    MIN_CONFIDENCE,
    OUTPUTS_HINT,
    image_tensor,
    min_confidence,
    output_names,
    output_tensors,
    raw_values,
    tensor_pixels,
)
from service.http.bodies import json_object

HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    pixels: Batch  # (N, 28, 28)
    outputs: tuple[RequestedOutput, ...]
    id: Any  # echoed back when the request has one
    min_confidence: float = 0.0


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part of a request, and the binary part after it (binary tensor data extension)."""
    end = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise UndecodableInput(f"{HEADER_LENGTH} must be the JSON part's length, at most {len(body)}")
        end = int(header_length)
    return json_object(body[:end], " with 'inputs'"), body[end:]


def input_pixels(header: dict[str, Any], binary: bytes, limits: Limits) -> Batch:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise UndecodableInput(f"request needs exactly one input tensor, named '{INPUT_NAME}'")
    given = inputs[0]
    tensor = image_tensor(given.get("name"), given.get("datatype"), given.get("shape"), limits)
    size = (given.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UndecodableInput(f"binary_data_size must be a whole number of bytes, found {quoted(size)}")
        if len(binary) != size:
            raise UndecodableInput(f"binary_data_size {size} does not match the {len(binary)} bytes after the JSON")
        return tensor_pixels(tensor, raw_values(tensor, binary, f"binary_data_size {size}"), "input data")
    data = given.get("data")
    try:
        values = np.asarray(data if isinstance(data, list) else [], dtype=None).reshape(-1)
    except (ValueError, TypeError) as e:
        raise UndecodableInput(f"input data must be a flat or nested list of {tensor.datatype} numbers: {e}") from e
    return tensor_pixels(tensor, values, "input data")


def requested_outputs(header: dict[str, Any], threshold: float | None = None) -> tuple[RequestedOutput, ...]:
    wanted = header.get("outputs") or [{"name": name} for name in output_names([], threshold)]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise UndecodableInput(OUTPUTS_HINT)
    names = output_names([o.get("name") for o in wanted])
    return tuple(
        RequestedOutput(name, bool((o.get("parameters") or {}).get("binary_data")))
        for name, o in zip(names, wanted, strict=True)
    )


def parse_infer_request(body: bytes, header_length: str | None, limits: Limits) -> InferRequest:
    header, binary = split_body(body, header_length)
    pixels = input_pixels(header, binary, limits)
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise UndecodableInput('"parameters" must be an object, e.g. {"min_confidence": 0.9}')
    threshold = min_confidence(parameters.get(MIN_CONFIDENCE))
    return InferRequest(pixels, requested_outputs(header, threshold), header.get("id"), threshold or 0.0)


def encode_infer_response(
    model_name: str, version: str, result: AllOutputs, request: InferRequest
) -> tuple[bytes, int | None]:
    """The answer's bytes, and the JSON part's length when binary outputs follow it (else None)."""
    outputs, blobs = [], []
    tensors = output_tensors(result, tuple(o.name for o in request.outputs), request.min_confidence)
    for requested, (name, datatype, array) in zip(request.outputs, tensors, strict=True):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if requested.binary:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1)
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
