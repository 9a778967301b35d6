"""/similar and /reference: the nearest training images of each image posted, with their vote, and each reference
image itself."""

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from models.card import MAX_NEIGHBOURS
from service.core.errors import NotFound
from service.core.forward import SIMILAR, Similar
from service.http.deps import InferenceQuery, PlaneDep, inference_query, served_model
from service.http.encoding import FastJSONResponse, negotiate, png_strip, similar_json
from service.http.native import ERRORS, image_body, infer, version_header
from service.http.schemas import ErrorResponse, SimilarResponse, error_responses

router = APIRouter(tags=["neighbours"])
# An index as /similar writes it: a whole number from 0, no sign, no leading zero, under ten digits (beyond any
# split's size), so that one image has one URL.
INDEX = r"^(0|[1-9][0-9]{0,8})$"


class SimilarQuery(InferenceQuery):
    k: int = Field(10, ge=1, le=MAX_NEIGHBOURS, description="how many of the nearest reference images to list")


@router.post(
    "/similar",
    response_model=SimilarResponse,
    responses=ERRORS,
    openapi_extra=image_body("/similar", SimilarQuery),
)
async def similar(request: Request) -> Response:
    """The k nearest images of the model's reference set (its training images) to each image, by cosine similarity
    of their embeddings, exactly; with the classifier's label and the neighbours' vote beside it."""
    context, query = inference_query(request, SimilarQuery)
    negotiate(request.headers.get("accept"), ["application/json"])
    served = context.served
    served.searched()  # a version without a reference set says so before its body is read
    result: Similar = await infer(request, context, query.resize, SIMILAR)
    return FastJSONResponse(similar_json(served, result, query.k), headers=version_header(served))


@router.get(
    "/reference/{model}/{index}.png",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "the 28x28 reference image; X-Label gives its label, X-Class-Name its class's name",
        },
        **error_responses(
            ErrorResponse,
            {
                400: "a version that is not a number",
                404: "unknown model or version, or an index not in the reference set",
                503: "model not loaded",
            },
        ),
    },
)
async def reference_image(
    request: Request,
    plane: PlaneDep,
    model: Annotated[str, Path(description="model name")],
    index: Annotated[str, Path(description="the image's index in its split, as /similar gives it", pattern=INDEX)],
    version: Annotated[str | None, Query(description="model version (default: the newest loaded)")] = None,
) -> Response:
    """One image of the model's reference set, as the PNG /similar's `image` links to."""
    served = served_model(request, plane, model, version)
    reference, section = served.searched()
    position = reference.position(int(index))
    if position is None:
        raise NotFound(
            f"index {index} is not in model {served.name!r} version {served.version}'s reference set: it holds "
            f"{len(reference):,} images of the {section.split} split (those held out for validation are not among them)"
        )
    pixels = reference.images[position].reshape(1, 28, 28)
    pinned = version is not None  # a URL that names its version always shows the same image
    return Response(
        png_strip(pixels),
        media_type="image/png",
        headers={
            "X-Label": str(int(reference.labels[position])),
            "X-Class-Name": quote(served.class_names[int(reference.labels[position])], safe=" /"),  # headers: latin-1
            "Cache-Control": "public, max-age=31536000, immutable" if pinned else "no-cache",
            **version_header(served),
        },
    )
