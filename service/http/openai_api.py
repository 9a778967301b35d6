"""The OpenAI embeddings API over the models: POST /v1/embeddings and GET /v1/models, in OpenAI's shapes, so that the
official SDKs work unchanged: `client.embeddings.create(model="mnist", input=[...])`.

An input is one image: a string holding a data URL (`data:image/png;base64,...`, any image type the service reads)
or the bare base64 of an image file; or an array of 784 whole numbers 0-255, the SDK's token-array form, taken as
raw pixels, row-major. A list of either is a batch. `model` is a model's name, or `name:version` for one version;
the answer's `model` names the version that answered. The vector is the card's embedding (the code, unit length,
compared by cosine: /models shows it); `encoding_format: base64` gives its little-endian float32 bytes, as OpenAI's
does (and as the SDKs ask by default). `usage` counts an image as 784 tokens: its pixels, the model's input units.
`resize: true`, beyond OpenAI's fields, prepares pictures of any size as /classify's `resize` does. Errors have
OpenAI's form, `{"error": {"message", "type", "param", "code"}}` (service.http.errors).
"""

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from models import IMAGE_SIDE, Framing
from service.core.dataplane import Body, DataPlane
from service.core.errors import (
    InputError,
    InvalidInput,
    NotFound,
    UndecodableInput,
    UnsupportedMediaType,
    cut,
    quoted,
)
from service.core.forward import EMBED_SERVED, Embeddings
from service.core.pixels import Batch, Limits, check_count, decode_uploads, json_depth
from service.core.repository import ServedModel
from service.http.bodies import json_object, media_type, read_body
from service.http.deps import plane_of
from service.http.encoding import FastJSONResponse
from service.http.native import version_header
from service.http.schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelList,
    ModelObject,
    OpenAIErrorResponse,
    error_responses,
)

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS = error_responses(
    OpenAIErrorResponse,
    {
        400: "undecodable body or image, or a field that is wrong",
        404: "unknown model or version",
        408: "request not completed within the timeout",
        413: "body or batch too large",
        415: "unsupported image format",
        422: "wrong image size or pixel values",
        503: "model not loaded, or at capacity",
    },
)
PIXELS = IMAGE_SIDE * IMAGE_SIDE
FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user", "resize"})
ENCODINGS = ("float", "base64")
DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII | re.IGNORECASE)


class InvalidField(InputError):
    """A mistake in one field of the request, which OpenAI's error form names as its `param` (cut short: it may be
    the client's own text): a 400, as OpenAI's."""

    def __init__(self, detail: str, param: str) -> None:
        super().__init__(detail)
        self.param = cut(param, 40)


class UnknownModel(NotFound):
    """A model (or version) not served, as OpenAI's API names it."""

    param, code = "model", "model_not_found"


@dataclass(frozen=True)
class Parsed:
    """An embeddings request's fields, checked."""

    model: str
    version: str | None
    inputs: list[str] | list[list[int]]
    encoding_format: str
    dimensions: int | None
    resize: bool


def parse_request(body: bytes, limits: Limits) -> Parsed:
    """The request's fields, each checked, with errors naming the field."""
    if json_depth(body) > limits.max_json_depth:
        raise InvalidField(
            f"JSON nested deeper than {limits.max_json_depth} levels; 'input' is a list of strings or arrays", "input"
        )
    payload = json_object(body, ': {"model": "mnist", "input": ["data:image/png;base64,..."]}')
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise InvalidField(f"unrecognised request argument {quoted(unknown[0])}", unknown[0])
    name, version = model_name(payload.get("model"))
    encoding = payload.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise InvalidField(f"'encoding_format' must be 'float' or 'base64', not {quoted(encoding)}", "encoding_format")
    resize = payload.get("resize", False)
    if not isinstance(resize, bool):
        raise InvalidField(f"'resize' must be true or false, not {quoted(resize)}", "resize")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        raise InvalidField(f"'dimensions' must be a whole number, not {quoted(dimensions)}", "dimensions")
    if not isinstance(payload.get("user", ""), str):
        raise InvalidField(f"'user' must be a string, not {quoted(payload['user'])}", "user")
    return Parsed(name, version, inputs(payload.get("input")), encoding, dimensions, resize)


def model_name(model: object) -> tuple[str, str | None]:
    """`name` or `name:version`, as (name, version or None)."""
    if not isinstance(model, str) or not model:
        raise InvalidField("'model' must be a model's name (GET /v1/models lists them)", "model")
    name, colon, version = model.partition(":")
    if colon and not version:
        raise InvalidField(f"'model' {quoted(model)} names no version after ':'; give name or name:version", "model")
    return name, version or None


def inputs(value: object) -> list[str] | list[list[int]]:
    """'input' as a list of images: strings (image files in base64), or pixel arrays."""
    one_array = isinstance(value, list) and value and not any(isinstance(v, str | list) for v in value)
    if isinstance(value, str) or one_array:
        value = [value]  # one image
    if not isinstance(value, list) or not value:
        raise InvalidField("'input' must be an image or a non-empty list of images", "input")
    if all(isinstance(v, str) for v in value) or all(isinstance(v, list) for v in value):
        return value
    raise InvalidField("'input' must be all strings (base64 image files) or all arrays of 784 pixels", "input")


def image_file(text: str, position: int) -> tuple[str, bytes]:
    """A data URL's or bare base64's image file: (its name in errors, its bytes)."""
    found = DATA_URL.match(text)
    if text[:5].lower() == "data:" and found is None:
        wanted = "data:<type>;base64,<data>"
        raise InvalidField(f"input {position}: a data URL must be {wanted}, not {quoted(text)}", "input")
    if found and found.group(1) and not found.group(1).lower().startswith("image/"):
        raise InvalidField(f"input {position}: a data URL of {quoted(found.group(1))}, not of an image", "input")
    try:
        data = base64.b64decode(text[found.end() :] if found else text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidField(f"input {position} is not base64 ({e}): {quoted(text)}", "input") from e
    if not data:
        raise InvalidField(f"input {position} is empty", "input")
    return f"input {position}", data


def decode_inputs(request: Parsed, limits: Limits, framing: Framing | None) -> tuple[Batch, None]:
    """The images, with every mistake in one (its size, format or pixels) a 400 naming `input`, as OpenAI's API
    answers a bad input."""
    check_count(len(request.inputs), limits)
    try:
        if isinstance(request.inputs[0], str):
            files = [image_file(text, i) for i, text in enumerate(request.inputs) if isinstance(text, str)]
            return decode_uploads(files, limits, framing), None
        for i, pixels in enumerate(request.inputs):
            if not isinstance(pixels, list) or len(pixels) != PIXELS:
                size = len(pixels) if isinstance(pixels, list) else 0
                raise InvalidField(f"input {i} has {size} items; an image is {PIXELS} (28x28, row-major)", "input")
            if not all(type(p) is int and 0 <= p <= 255 for p in pixels):
                raise InvalidField(f"input {i}: pixels must be whole numbers 0-255", "input")
        return np.asarray(request.inputs, dtype=np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE), None
    except (InvalidInput, UnsupportedMediaType) as e:  # the image decoders' 422 and 415
        raise InvalidField(e.detail, "input") from e


def model_for(plane: DataPlane, request: Request, name: str, version: str | None) -> ServedModel:
    try:
        served = plane.model(name, version)
    except NotFound as e:
        raise UnknownModel(e.detail) from e
    except UndecodableInput as e:  # a version that is not a number
        raise InvalidField(e.detail, "model") from e
    request.state.model = served.name
    return served


def embedding_list(served: ServedModel, result: Embeddings, encoding: str) -> dict[str, Any]:
    vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist(),
        }
        for i, vector in enumerate(vectors)
    ]
    tokens = len(vectors) * PIXELS
    return {
        "object": "list",
        "data": data,
        "model": f"{served.name}:{served.version}",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.post(
    "/embeddings",
    response_model=EmbeddingsResponse,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbeddingsRequest.model_json_schema()}},
        }
    },
)
async def embeddings(request: Request) -> Response:
    """Embeddings of images in the OpenAI shape (see the module's docstring for the inputs)."""
    plane = plane_of(request)
    if media_type(request) not in ("application/json", ""):
        raise UnsupportedMediaType(f"Content-Type {quoted(media_type(request))} is not accepted; send application/json")
    limits = plane.limits
    body = await read_body(request, min(limits.max_json_bytes, limits.max_upload_bytes), "JSON body")
    parsed = parse_request(body, limits)
    served = model_for(plane, request, parsed.model, parsed.version)
    dim = served.card.served_embedding.dim
    if parsed.dimensions not in (None, dim):  # a code is not a nested (Matryoshka) embedding: no shorter one
        raise InvalidField(f"'dimensions' must be {dim} (this model's embedding) or left out", "dimensions")
    framing = served.card.framing if parsed.resize else None

    async def read() -> Body[None]:
        return Body(len(body), partial(decode_inputs, parsed, plane.limits, framing), inline=framing is None)

    _, result = await plane.infer(served, EMBED_SERVED, read)
    return FastJSONResponse(embedding_list(served, result, parsed.encoding_format), headers=version_header(served))


def model_object(name: str, served: ServedModel) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created(served), "owned_by": "sae-serve"}


def created(served: ServedModel) -> int:
    """When the version was trained (its card's provenance; UTC where it names no zone), in Unix seconds; 0 where
    the card does not say."""
    try:
        created = datetime.fromisoformat(str(served.card.provenance.get("created")))
    except ValueError:
        return 0
    return int((created if created.tzinfo else created.replace(tzinfo=UTC)).timestamp())


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> Response:
    """Every loaded model, by name (its newest version) and as `name:version` for each loaded version."""
    loaded = plane_of(request).loaded
    data = []
    for name, newest in loaded.models.items():
        data.append(model_object(name, newest))
        data += [model_object(f"{name}:{v}", served) for v, served in sorted(loaded.versions[name].items())]
    return FastJSONResponse({"object": "list", "data": data})


@router.get("/models/{model}", response_model=ModelObject, responses=ERRORS)
async def retrieve_model(request: Request, model: str) -> Response:
    """One model, by name or `name:version`."""
    name, version = model_name(model)
    return FastJSONResponse(model_object(model, model_for(plane_of(request), request, name, version)))
