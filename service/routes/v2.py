"""Open Inference Protocol (KServe v2) REST routes: thin, over the protocol codec and the service's own pipeline.

An inference request goes the way a native one goes: body read under the upload limit, decoded (in a worker
thread when large), forwarded through the model's micro-batcher on the forward thread, all within
SAE_REQUEST_TIMEOUT_S; errors are the service's own, in the protocol's form `{"error": ...}`.
"""

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.deps import find_model
from service.errors import PROTOCOL_PREFIX, within_timeout
from service.inputs import Limits, read_body
from service.microbatching import ModelBatchers
from service.predict import AllOutputs
from service.protocol import (
    HEADER_LENGTH,
    INPUT_NAME,
    InferRequest,
    encode_infer_response,
    model_metadata,
    parse_infer_request,
)
from service.registry import ServedModel, parse_version
from service.schemas import ProtocolErrorResponse, error_responses
from service.settings import Settings
from service.timing import timed_decode

# Parsing this much takes well under a millisecond; larger bodies are parsed in a worker thread.
INLINE_PARSE_BYTES = 16 * 1024


ERRORS = error_responses(
    ProtocolErrorResponse,
    {
        400: "malformed request or tensor",
        404: "unknown model",
        408: "request not completed within the timeout",
        413: "body too large, or too many images",
        422: "pixel values out of range",
        503: "model not loaded, or not ready",
    },
)
router = APIRouter(prefix=PROTOCOL_PREFIX, tags=["open inference protocol v2"], responses=ERRORS)


def served_model(request: Request, name: str, version: str | None = None) -> ServedModel:
    served = find_model(request.app.state.store.registry, name, parse_version(version))
    request.state.model = served.name  # for metrics and logs: only known names, never the raw path
    return served


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "sae-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(request: Request) -> JSONResponse:
    ready = request.app.state.store.registry.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata_route(request: Request, name: str, version: str | None = None) -> JSONResponse:
    """The model's inputs and outputs; `versions` lists every loaded version."""
    served = served_model(request, name, version)
    versions = [str(v) for v in request.app.state.store.registry.versions[served.name]]
    return JSONResponse(model_metadata(served.name, versions, served.class_names, served.model.config.hidden_dims[-1]))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None) -> JSONResponse:
    served = served_model(request, name, version)
    return JSONResponse({"name": served.name, "version": str(served.version), "ready": True})


async def parsed_request(request: Request, limits: Limits) -> InferRequest:
    body = await read_body(request, limits.max_upload_bytes)
    header_length = request.headers.get(HEADER_LENGTH)
    return await timed_decode(len(body) <= INLINE_PARSE_BYTES, parse_infer_request, body, header_length, limits)


@router.post("/models/{name}/versions/{version}/infer", include_in_schema=False)
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
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    """Infer with one `images` tensor; JSON or binary tensor data in and out. `/models/{name}/versions/{version}/infer`
    pins a version; without it the newest loaded version answers, named in `model_version`."""
    served = served_model(request, name, version)
    settings: Settings = request.app.state.settings
    batchers: ModelBatchers = request.app.state.batchers

    async def work() -> tuple[InferRequest, AllOutputs]:
        parsed = await parsed_request(request, request.app.state.limits)
        return parsed, await batchers.all_outputs(served, parsed.pixels)

    parsed, result = await within_timeout(work(), settings.request_timeout_s)
    content, header_length = encode_infer_response(served.name, str(served.version), result, parsed)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_length)}
    )
