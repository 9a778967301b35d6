"""/classify, /reconstruct, /embed: decode -> predict -> encode, with the work off the event loop."""

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.deps import InferenceContext, InferenceContextDep, ResizeQuery
from service.encoding import (
    FastJSONResponse,
    classification_json,
    embedding_json,
    negotiate,
    npy_bytes,
    png_strip,
    reconstruction_json,
)
from service.errors import within_timeout
from service.inputs import Batch, decode_batch, read_images
from service.registry import ServedModel
from service.schemas import (
    ClassifyResponse,
    EmbedResponse,
    ErrorResponse,
    ImagesRequest,
    ReconstructResponse,
    error_responses,
)
from service.timing import timed_decode

Result = TypeVar("Result")
router = APIRouter(tags=["inference"])
# Decoding this much takes well under a millisecond; larger bodies decode in a worker thread.
INLINE_DECODE_BYTES = 16 * 1024

PNG_EXAMPLE = "a 28x28 grayscale PNG, white digit on black"
IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": PNG_EXAMPLE,
                        }
                    },
                    "required": ["file"],
                }
            },
            "image/png": {
                "schema": {"type": "string", "format": "binary", "description": "one image as the whole body"}
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary", "description": "N x 784 uint8 pixels, row-major"}
            },
            "application/json": {
                "schema": ImagesRequest.model_json_schema(),
                "example": {
                    "images": [[[0] * 28] * 12 + [[0] * 12 + [255] * 4 + [0] * 12] * 4 + [[0] * 28] * 12],
                    "dtype": "uint8",
                },
            },
        },
    }
}
ERRORS = error_responses(
    ErrorResponse,
    {
        400: "undecodable image or body",
        404: "unknown model",
        406: "no acceptable response type",
        408: "request not completed within the timeout",
        413: "body or batch too large",
        415: "unsupported media type or image format",
        422: "wrong size, shape or value range",
        503: "model not loaded",
    },
)


def version_header(served: ServedModel) -> dict[str, str]:
    """Every answer names the model version that computed it, in the body where it is JSON and in this header."""
    return {"X-Model-Version": str(served.version)}


async def infer(
    request: Request, context: InferenceContext, resize: bool, predict: Callable[[Batch], Awaitable[Result]]
) -> Result:
    """Read, decode and predict within the request timeout."""

    async def work() -> Result:
        return await predict(await batch_from(request, context, resize))

    return await within_timeout(work(), context.timeout_s)


async def batch_from(request: Request, context: InferenceContext, resize: bool) -> Batch:
    limits = context.limits
    kind, content = await read_images(request, limits)
    framing = context.served.card.framing if resize else None
    size = len(content) if isinstance(content, bytes) else sum(len(data) for _, data in content)
    inline = framing is None and size <= INLINE_DECODE_BYTES  # a few small images: cheaper than a thread hop
    return await timed_decode(inline, decode_batch, kind, content, limits, framing)


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, openapi_extra=IMAGE_BODY)
async def classify(
    request: Request,
    context: InferenceContextDep,
    resize: ResizeQuery = False,
    top_k: Annotated[int, Query(ge=1, le=1000, description="how many of the most probable classes to list")] = 3,
    min_confidence: Annotated[
        float,
        Query(
            ge=0,
            le=1,
            description="abstain (`abstained: true`, the label still given) where the top probability is under this",
        ),
    ] = 0.0,
) -> Response:
    """Class probabilities (calibrated), top-k classes, an in-distribution flag and whether the service abstains,
    for each image, in input order."""
    served = context.served
    result = await infer(request, context, resize, partial(context.batchers.classify, served))
    top_k = min(top_k, len(served.class_names))
    answer = classification_json(
        served.name, served.version, result, served.class_names, top_k, served.error_threshold, min_confidence
    )
    return FastJSONResponse(answer, headers=version_header(served))


@router.post(
    "/reconstruct",
    response_model=ReconstructResponse,
    responses={
        **ERRORS,
        200: {
            "content": {"image/png": {}, "application/json": {}},
            "description": "PNG (default): 28x28, or 28 x 28N for N images side by side; header "
            "X-Reconstruction-Error lists each image's error. JSON on Accept: application/json.",
        },
    },
    openapi_extra=IMAGE_BODY,
)
async def reconstruct(request: Request, context: InferenceContextDep, resize: ResizeQuery = False) -> Response:
    """The autoencoder's reconstruction of each image, as PNG or JSON pixels, with its error."""
    media = negotiate(request.headers.get("accept"), ["image/png", "application/json"])
    served = context.served
    result = await infer(request, context, resize, partial(context.batchers.reconstruct, served))
    if media == "application/json":
        return FastJSONResponse(
            reconstruction_json(served.name, served.version, result), headers=version_header(served)
        )
    errors = ",".join(f"{e:.6g}" for e in result.reconstruction_errors.tolist())
    return Response(
        await run_in_threadpool(png_strip, result.pixels),
        media_type="image/png",
        headers={"X-Reconstruction-Error": errors, "X-Image-Count": str(len(result.pixels)), **version_header(served)},
    )


@router.post(
    "/embed",
    response_model=EmbedResponse,
    responses={
        **ERRORS,
        200: {
            "content": {"application/json": {}, "application/x-npy": {}},
            "description": "JSON by default; raw float32 (N, dim) in NumPy .npy form on Accept: application/x-npy",
        },
    },
    openapi_extra=IMAGE_BODY,
)
async def embed(
    request: Request,
    context: InferenceContextDep,
    resize: ResizeQuery = False,
    layer: Annotated[int, Query(ge=1, le=2, description="2: the 256-d code (default); 1: the 400-d first layer")] = 2,
) -> Response:
    """The encoder's code for each image."""
    media = negotiate(request.headers.get("accept"), ["application/json", "application/x-npy"])
    served = context.served
    embeddings = await infer(request, context, resize, partial(context.batchers.embed, served, layer=layer))
    if media == "application/x-npy":
        return Response(npy_bytes(embeddings), media_type="application/x-npy", headers=version_header(served))
    return FastJSONResponse(
        embedding_json(served.name, served.version, layer, embeddings), headers=version_header(served)
    )
