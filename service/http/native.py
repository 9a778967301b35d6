"""/classify, /reconstruct, /embed: decode -> predict -> encode, with the work off the event loop."""

from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from models import Framing
from service.core.dataplane import Body
from service.core.forward import CLASSIFY, EMBED, RECONSTRUCT, Classification, Embeddings, Operation, Reconstructions
from service.core.pixels import Batch, Limits, decode_batch
from service.core.repository import ServedModel
from service.http.bodies import read_images
from service.http.deps import InferenceContext, InferenceQuery, inference_query, query_parameters
from service.http.encoding import (
    FastJSONResponse,
    classification_json,
    embedding_json,
    judged_headers,
    negotiate,
    npy_bytes,
    png_strip,
    reconstruction_json,
)
from service.http.schemas import (
    ClassifyResponse,
    EmbedResponse,
    ErrorResponse,
    ImagesRequest,
    ReconstructResponse,
    error_responses,
)

router = APIRouter(tags=["inference"])

PNG_EXAMPLE = "a 28x28 grayscale PNG, white digit on black"


class ClassifyQuery(InferenceQuery):
    top_k: int = Field(3, ge=1, le=1000, description="how many of the most probable classes to list")
    min_confidence: float = Field(
        0.0,
        ge=0,
        le=1,
        description="abstain (`abstained: true`, the label still given) where the top probability is under this, "
        "and, for any value above 0, where the image is flagged as unlike the training images",
    )


class EmbedQuery(InferenceQuery):
    layer: int = Field(2, ge=1, le=2, description="2: the 256-d code (default); 1: the 400-d first layer")


def image_body(route: str, query: type[InferenceQuery] = InferenceQuery) -> dict[str, Any]:
    """The route's query parameters and request bodies for the OpenAPI docs; the multipart body's example is a
    command, as no example value can hold a file."""
    return {
        "parameters": query_parameters(query),
        "requestBody": {
            "required": True,
            "description": "Image files in the multipart field `file` (repeat it for a batch), for example "
            f"`curl -F file=@docs/samples/digit-7.png -F file=@docs/samples/digit-2.png http://127.0.0.1:8000{route}`"
            "; or one image as the whole body, raw pixels, or JSON pixel arrays.",
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
        },
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


async def infer(request: Request, context: InferenceContext, resize: bool, operation: Operation) -> Any:
    """Read the body and run `operation` on its images, through the core."""
    plane, served = context.plane, context.served
    framing = served.card.framing if resize else None

    async def read() -> Body[None]:
        kind, content = await read_images(request, plane.limits)
        size = len(content) if isinstance(content, bytes) else sum(len(data) for _, data in content)
        return Body(size, partial(decoded, kind, content, plane.limits, framing), inline=framing is None)

    _, result = await plane.infer(served, operation, read)
    return result


def decoded(
    kind: str, content: bytes | list[tuple[str, bytes]], limits: Limits, framing: Framing | None
) -> tuple[Batch, None]:
    return decode_batch(kind, content, limits, framing), None


@router.post(
    "/classify", response_model=ClassifyResponse, responses=ERRORS, openapi_extra=image_body("/classify", ClassifyQuery)
)
async def classify(request: Request) -> Response:
    """Class probabilities (calibrated), top-k classes, an in-distribution flag and whether the service abstains,
    for each image, in input order."""
    context, query = inference_query(request, ClassifyQuery)
    negotiate(request.headers.get("accept"), ["application/json"])
    served = context.served
    result: Classification = await infer(request, context, query.resize, CLASSIFY)
    top_k = min(query.top_k, len(served.class_names))
    answer = classification_json(served.name, served.version, result, served.class_names, top_k, query.min_confidence)
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
    openapi_extra=image_body("/reconstruct"),
)
async def reconstruct(request: Request) -> Response:
    """The autoencoder's reconstruction of each image, as PNG or JSON pixels, with its error."""
    context, query = inference_query(request, InferenceQuery)
    media = negotiate(request.headers.get("accept"), ["image/png", "application/json"])
    served = context.served
    result: Reconstructions = await infer(request, context, query.resize, RECONSTRUCT)
    if media == "application/json":
        return FastJSONResponse(
            reconstruction_json(served.name, served.version, result), headers=version_header(served)
        )
    errors = ",".join(f"{e:.6g}" for e in result.reconstruction_errors.tolist())
    return Response(
        await run_in_threadpool(png_strip, result.pixels),
        media_type="image/png",
        headers={
            "X-Reconstruction-Error": errors,
            "X-Image-Count": str(len(result.pixels)),
            **judged_headers(result.ood_scores, result.in_distribution),
            **version_header(served),
        },
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
    openapi_extra=image_body("/embed", EmbedQuery),
)
async def embed(request: Request) -> Response:
    """The encoder's code for each image."""
    context, query = inference_query(request, EmbedQuery)
    media = negotiate(request.headers.get("accept"), ["application/json", "application/x-npy"])
    served = context.served
    layer = query.layer
    embeddings: Embeddings = await infer(request, context, query.resize, EMBED[layer])
    if media == "application/x-npy":
        headers = {**judged_headers(embeddings.ood_scores, embeddings.in_distribution), **version_header(served)}
        return Response(npy_bytes(embeddings.vectors), media_type="application/x-npy", headers=headers)
    return FastJSONResponse(
        embedding_json(served.name, served.version, layer, embeddings), headers=version_header(served)
    )
