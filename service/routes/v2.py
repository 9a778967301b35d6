"""Open Inference Protocol (KServe v2) REST, with the binary tensor data extension.

Inputs: one tensor `images`, UINT8 (0-255) or FP32 (0-1, rounded to the nearest 1/255 like the native
JSON floats), shape [N, 28, 28] or [N, 784]. Outputs, all by default or as the request's `outputs`
names: probabilities, label, embedding, reconstruction, reconstruction_error.
"""

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from numpy.typing import NDArray
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from models import IMAGE_SIDE
from service import inference
from service.deps import find_model
from service.errors import InputError
from service.inputs import read_body
from service.registry import Registry, ServedModel
from service.settings import Settings


class ProtocolErrorBody(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ProtocolErrorBody, "description": "malformed request or tensor"},
    404: {"model": ProtocolErrorBody, "description": "unknown model"},
    413: {"model": ProtocolErrorBody, "description": "body too large"},
    503: {"model": ProtocolErrorBody, "description": "model not loaded, or not ready"},
}
router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], responses=ERRORS)
VERSION = "1"
HEADER_LENGTH = "inference-header-content-length"
INPUT_NAME = "images"
NUMPY_TYPES = {"UINT8": np.uint8, "FP32": np.float32, "INT64": np.int64}


class ProtocolError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code, self.message = status_code, message


async def protocol_error(request: Request, exc: Exception) -> JSONResponse:
    """The protocol's own error form, registered on the app for ProtocolError."""
    assert isinstance(exc, ProtocolError)
    return JSONResponse({"error": exc.message}, status_code=exc.status_code)


def served_model(request: Request, name: str) -> ServedModel:
    registry: Registry = request.app.state.registry
    try:
        return find_model(registry, name)
    except InputError as e:
        raise ProtocolError(e.status_code, e.detail) from e


def outputs_of(served: ServedModel) -> list[dict[str, Any]]:
    classes, code = len(served.class_names), served.model.config.hidden_dims[-1]
    return [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, code]},
        {"name": "reconstruction", "datatype": "FP32", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]},
        {"name": "reconstruction_error", "datatype": "FP32", "shape": [-1]},
    ]


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "sae-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(request: Request) -> JSONResponse:
    ready = request.app.state.registry.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}")
async def model_metadata(request: Request, name: str) -> JSONResponse:
    served = served_model(request, name)
    return JSONResponse(
        {
            "name": served.name,
            "versions": [VERSION],
            "platform": "pytorch",
            "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]}],
            "outputs": outputs_of(served),
            "parameters": {"class_names": served.class_names, "input_datatypes": ["UINT8", "FP32"]},
        }
    )


@router.get("/models/{name}/ready")
async def model_ready(request: Request, name: str) -> JSONResponse:
    return JSONResponse({"name": served_model(request, name).name, "ready": True})


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part of a request, and the binary part after it (binary tensor data extension)."""
    end = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(400, f"{HEADER_LENGTH} must be the JSON part's length, at most {len(body)}")
        end = int(header_length)
    try:
        header = json.loads(body[:end])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ProtocolError(400, f"request JSON is not valid: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolError(400, "request must be a JSON object with 'inputs'")
    return header, body[end:]


def input_pixels(header: dict[str, Any], binary: bytes, max_images: int) -> NDArray[np.uint8]:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, f"request needs exactly one input tensor, named '{INPUT_NAME}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise ProtocolError(400, f"unknown input {tensor.get('name')!r}; the input is '{INPUT_NAME}'")
    datatype, raw_shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in ("UINT8", "FP32"):
        raise ProtocolError(400, f"input datatype {datatype!r} is not accepted; send UINT8 (0-255) or FP32 (0-1)")
    side = IMAGE_SIDE * IMAGE_SIDE
    shape: list[int] = raw_shape if isinstance(raw_shape, list) else []
    valid_shape = bool(shape) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    if not valid_shape or shape[1:] not in ([IMAGE_SIDE, IMAGE_SIDE], [side]) or shape[0] < 1:
        raise ProtocolError(400, f"input shape {raw_shape} is not accepted; send [N, 28, 28] or [N, 784] with N >= 1")
    count = shape[0]
    if count > max_images:
        raise ProtocolError(400, f"{count} images in one request; the limit is {max_images}")
    dtype = NUMPY_TYPES[datatype]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    try:
        if size is not None:
            if len(binary) != size or size != count * side * np.dtype(dtype).itemsize:
                raise ProtocolError(400, f"binary_data_size {size} does not match the shape {shape} of {datatype}")
            array = np.frombuffer(binary, dtype=dtype)
        else:
            array = np.asarray(tensor.get("data"), dtype=dtype).reshape(-1)
    except (ValueError, TypeError) as e:
        raise ProtocolError(400, f"input data does not hold {datatype} numbers: {e}") from e
    if array.size != count * side:
        raise ProtocolError(400, f"input data holds {array.size} values; shape {shape} needs {count * side}")
    if datatype == "FP32":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ProtocolError(400, "FP32 pixels must be finite and lie in [0, 1]")
        array = np.round(array.astype(np.float64) * 255)
    return array.astype(np.uint8).reshape(count, IMAGE_SIDE, IMAGE_SIDE)


@router.post(
    "/models/{name}/infer",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object"},
                    "example": {
                        "inputs": [{"name": INPUT_NAME, "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}],
                        "outputs": [{"name": "probabilities"}, {"name": "label"}],
                    },
                }
            },
        }
    },
    responses={200: {"content": {"application/json": {}, "application/octet-stream": {}}}},
)
async def infer(request: Request, name: str) -> Response:
    """Infer with one `images` tensor; JSON or binary tensor data in and out."""
    settings: Settings = request.app.state.settings
    served = served_model(request, name)
    try:
        body = await read_body(request, settings.max_upload_bytes)
    except InputError as e:
        raise ProtocolError(e.status_code, e.detail) from e
    header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
    pixels = input_pixels(header, binary, settings.max_batch_images)
    known = {o["name"]: o for o in outputs_of(served)}
    wanted = header.get("outputs") or [{"name": n} for n in known]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and o.get("name") in known for o in wanted):
        raise ProtocolError(400, f"outputs must be named from {', '.join(known)}")
    result = await run_in_threadpool(inference.everything, served, pixels)
    count = len(pixels)
    values = {
        "probabilities": result.probabilities,
        "label": result.probabilities.argmax(1).astype(np.int64),
        "embedding": result.embeddings,
        "reconstruction": result.reconstructions.reshape(count, IMAGE_SIDE, IMAGE_SIDE),
        "reconstruction_error": result.reconstruction_errors,
    }
    outputs, blobs = [], []
    for requested in wanted:
        array = np.ascontiguousarray(values[requested["name"]])
        entry: dict[str, Any] = {"name": requested["name"], "datatype": known[requested["name"]]["datatype"]}
        entry["shape"] = list(array.shape)
        if (requested.get("parameters") or {}).get("binary_data"):
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    response = {"model_name": served.name, "model_version": VERSION, "outputs": outputs}
    if "id" in header:
        response["id"] = header["id"]
    head = json.dumps(response).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(
        head + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
