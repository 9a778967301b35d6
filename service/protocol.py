"""Open Inference Protocol (KServe v2) tensors: request bodies -> pixels, model outputs -> answers. No HTTP here.

Inputs: one tensor `images`, UINT8 (0-255) or FP32 (0-1, rounded to the nearest 1/255 like the native
JSON floats), shape [N, 28, 28] or [N, 784], as JSON `data` or as binary tensor data after the JSON
header (the binary tensor data extension). Outputs, all by default or as the request's `outputs` names:
probabilities, label, embedding, reconstruction, reconstruction_error, each as JSON or binary data.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from models import IMAGE_SIDE
from service.errors import UndecodableInput
from service.inputs import Batch, Limits, PixelScale, check_count, to_pixels
from service.predict import AllOutputs

INPUT_NAME = "images"
HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {"UINT8": np.uint8, "FP32": np.float32, "INT64": np.int64}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    pixels: Batch  # (N, 28, 28)
    outputs: tuple[RequestedOutput, ...]
    id: Any  # echoed back when the request has one


def output_metadata(classes: int, code_dim: int) -> list[dict[str, Any]]:
    return [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, code_dim]},
        {"name": "reconstruction", "datatype": "FP32", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]},
        {"name": "reconstruction_error", "datatype": "FP32", "shape": [-1]},
    ]


OUTPUT_NAMES = tuple(output["name"] for output in output_metadata(0, 0))


def model_metadata(name: str, version: str, class_names: list[str], code_dim: int) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": "pytorch",
        "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]}],
        "outputs": output_metadata(len(class_names), code_dim),
        "parameters": {"class_names": class_names, "input_datatypes": ["UINT8", "FP32"]},
    }


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part of a request, and the binary part after it (binary tensor data extension)."""
    end = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise UndecodableInput(f"{HEADER_LENGTH} must be the JSON part's length, at most {len(body)}")
        end = int(header_length)
    try:
        header = orjson.loads(body[:end])
    except orjson.JSONDecodeError as e:
        raise UndecodableInput(f"request JSON is not valid: {e}") from e
    if not isinstance(header, dict):
        raise UndecodableInput("request must be a JSON object with 'inputs'")
    return header, body[end:]


def input_pixels(header: dict[str, Any], binary: bytes, limits: Limits) -> Batch:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise UndecodableInput(f"request needs exactly one input tensor, named '{INPUT_NAME}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise UndecodableInput(f"unknown input {tensor.get('name')!r}; the input is '{INPUT_NAME}'")
    datatype, raw_shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in ("UINT8", "FP32"):
        raise UndecodableInput(f"input datatype {datatype!r} is not accepted; send UINT8 (0-255) or FP32 (0-1)")
    side = IMAGE_SIDE * IMAGE_SIDE
    shape: list[int] = raw_shape if isinstance(raw_shape, list) else []
    valid_shape = bool(shape) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    if not valid_shape or shape[1:] not in ([IMAGE_SIDE, IMAGE_SIDE], [side]) or shape[0] < 1:
        raise UndecodableInput(f"input shape {raw_shape} is not accepted; send [N, 28, 28] or [N, 784] with N >= 1")
    count = shape[0]
    check_count(count, limits)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if len(binary) != size or size != count * side * np.dtype(DATATYPES[datatype]).itemsize:
            raise UndecodableInput(f"binary_data_size {size} does not match the shape {shape} of {datatype}")
        array: NDArray[Any] = np.frombuffer(binary, dtype=DATATYPES[datatype])
    else:
        data = tensor.get("data")
        try:
            array = np.asarray(data if isinstance(data, list) else [], dtype=None).reshape(-1)
        except (ValueError, TypeError) as e:
            raise UndecodableInput(f"input data must be a flat or nested list of {datatype} numbers: {e}") from e
    if array.size != count * side:
        raise UndecodableInput(f"input data holds {array.size} values; shape {shape} needs {count * side}")
    scale: PixelScale = "float" if datatype == "FP32" else "uint8"
    pixels = to_pixels(array, scale, f"for datatype {datatype}", "send datatype FP32 for values in [0, 1]")
    return pixels.reshape(count, IMAGE_SIDE, IMAGE_SIDE)


def requested_outputs(header: dict[str, Any]) -> tuple[RequestedOutput, ...]:
    wanted = header.get("outputs") or [{"name": name} for name in OUTPUT_NAMES]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and o.get("name") in OUTPUT_NAMES for o in wanted):
        raise UndecodableInput(f"outputs must be named from {', '.join(OUTPUT_NAMES)}")
    return tuple(RequestedOutput(o["name"], bool((o.get("parameters") or {}).get("binary_data"))) for o in wanted)


def parse_infer_request(body: bytes, header_length: str | None, limits: Limits) -> InferRequest:
    header, binary = split_body(body, header_length)
    pixels = input_pixels(header, binary, limits)
    return InferRequest(pixels, requested_outputs(header), header.get("id"))


def encode_infer_response(
    model_name: str, version: str, result: AllOutputs, request: InferRequest
) -> tuple[bytes, int | None]:
    """The answer's bytes, and the JSON part's length when binary outputs follow it (else None)."""
    count = len(request.pixels)
    values: dict[str, NDArray[Any]] = {
        "probabilities": result.probabilities,
        "label": result.probabilities.argmax(1).astype(np.int64),
        "embedding": result.embeddings,
        "reconstruction": result.reconstructions.reshape(count, IMAGE_SIDE, IMAGE_SIDE),
        "reconstruction_error": result.reconstruction_errors,
    }
    datatypes = {o["name"]: o["datatype"] for o in output_metadata(0, 0)}
    outputs, blobs = [], []
    for requested in request.outputs:
        array = np.ascontiguousarray(values[requested.name])
        entry: dict[str, Any] = {"name": requested.name, "datatype": datatypes[requested.name]}
        entry["shape"] = list(array.shape)
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
