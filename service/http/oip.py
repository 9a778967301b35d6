"""Open Inference Protocol (KServe v2) REST routes: thin, translating to and from the data plane.

An inference goes the way a native one goes (service.core.dataplane); errors are the core's, in the
protocol's form `{"error": ...}`.
"""

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.core.dataplane import Body
from service.core.forward import ALL_OUTPUTS
from service.core.pixels import Batch
from service.core.tensors import INPUT_NAME
from service.http.bodies import read_body
from service.http.deps import PlaneDep, served_model
from service.http.errors import PROTOCOL_PREFIX
from service.http.oip_codec import HEADER_LENGTH, InferRequest, encode_infer_response, parse_infer_request
from service.http.schemas import ProtocolErrorResponse, error_responses

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


@router.get("")
async def server_metadata(plane: PlaneDep) -> dict[str, Any]:
    return plane.server_metadata()


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(plane: PlaneDep) -> JSONResponse:
    ready = plane.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata_route(
    request: Request, plane: PlaneDep, name: str, version: str | None = None
) -> JSONResponse:
    """The model's inputs and outputs; `versions` lists every loaded version."""
    return JSONResponse(plane.model_metadata(served_model(request, plane, name, version)))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, plane: PlaneDep, name: str, version: str | None = None) -> JSONResponse:
    served = served_model(request, plane, name, version)
    return JSONResponse({"name": served.name, "version": str(served.version), "ready": True})


INFER_BODY: dict[str, Any] = {
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
}
INFER_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "application/octet-stream": {}}}
}


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_BODY, responses=INFER_ANSWERS)
@router.post("/models/{name}/infer", openapi_extra=INFER_BODY, responses=INFER_ANSWERS)
async def infer(request: Request, plane: PlaneDep, name: str, version: str | None = None) -> Response:
    """Infer with one `images` tensor; JSON or binary tensor data in and out. `/models/{name}/versions/{version}/infer`
    pins a version; without it the newest loaded version answers, named in `model_version`."""
    served = served_model(request, plane, name, version)

    async def read() -> Body[InferRequest]:
        body = await read_body(request, plane.limits.max_upload_bytes)
        header_length = request.headers.get(HEADER_LENGTH)

        def decode() -> tuple[Batch, InferRequest]:
            parsed = parse_infer_request(body, header_length, plane.limits)
            return parsed.pixels, parsed

        return Body(len(body), decode)

    parsed, result = await plane.infer(served, ALL_OUTPUTS, read)
    content, header_length = encode_infer_response(served.name, str(served.version), result, parsed)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_length)}
    )
