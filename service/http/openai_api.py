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
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from models import IMAGE_SIDE, Framing
from service.core.dataplane import Body, DataPlane
from service.core.errors import InputError, InvalidInput, NotFound, UndecodableInput, quoted
from service.core.forward import EMBED_SERVED, Embeddings
from service.core.pixels import Batch, Limits, check_count, decode_uploads, json_depth, to_pixels
from service.core.repository import ServedModel
from service.http.bodies import media_type, read_body
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
DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)
MAX_JSON_DEPTH = 4  # {"input": [[pixels]]}


class InvalidField(InputError):
    """A mistake in one field of the request, which OpenAI's error form names as its `param`: a 400, as OpenAI's."""

    def __init__(self, detail: str, param: str) -> None:
        super().__init__(detail)
        self.param = param


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


def parse_request(body: bytes) -> Parsed:
    """The request's fields, each checked, with errors naming the field."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidField(
            f"JSON nested deeper than {MAX_JSON_DEPTH} levels; 'input' is a list of strings or arrays", "input"
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise UndecodableInput(f"body is not valid JSON: {e}") from e
    if not isinstance(payload, dict):
        raise UndecodableInput('body must be a JSON object: {"model": "mnist", "input": ["data:image/png;base64,..."]}')
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise InvalidField(f"unrecognised request argument {quoted(unknown[0])}", unknown[0])
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidField("'model' must be a model's name (GET /v1/models lists them)", "model")
    name, _, version = model.partition(":")
    encoding = payload.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise InvalidField(f"'encoding_format' must be 'float' or 'base64', not {quoted(encoding)}", "encoding_format")
    resize = payload.get("resize", False)
    if not isinstance(resize, bool):
        raise InvalidField(f"'resize' must be true or false, not {quoted(resize)}", "resize")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        raise InvalidField(f"'dimensions' must be a whole number, not {quoted(dimensions)}", "dimensions")
    return Parsed(name, version or None, inputs(payload.get("input")), encoding, dimensions, resize)


def inputs(value: object) -> list[str] | list[list[int]]:
    """'input' as a list of images: strings (image files in base64), or pixel arrays."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, int) for v in value)):
        value = [value]  # one image
    if not isinstance(value, list) or not value:
        raise InvalidField("'input' must be an image or a non-empty list of images", "input")
    if all(isinstance(v, str) for v in value):
        return value
    if all(isinstance(v, list) for v in value):
        return value
    raise InvalidField("'input' must be all strings (base64 image files) or all arrays of 784 pixels", "input")


def image_file(text: str, position: int) -> tuple[str, bytes]:
    """A data URL's or bare base64's image file: (its name in errors, its bytes)."""
    found = DATA_URL.match(text)
    if text.startswith("data:") and found is None:
        wanted = "data:<type>;base64,<data>"
        raise InvalidField(f"input {position}: a data URL must be {wanted}, not {quoted(text)}", "input")
    try:
        data = base64.b64decode(text[found.end() :] if found else text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidField(f"input {position} is not base64 ({e}): {quoted(text)}", "input") from e
    if not data:
        raise InvalidField(f"input {position} is empty", "input")
    return f"input {position}", data


def decode_inputs(request: Parsed, limits: Limits, framing: Framing | None) -> tuple[Batch, None]:
    check_count(len(request.inputs), limits)
    if isinstance(request.inputs[0], str):
        files = [image_file(text, i) for i, text in enumerate(request.inputs) if isinstance(text, str)]
        return decode_uploads(files, limits, framing), None
    for i, pixels in enumerate(request.inputs):
        if not isinstance(pixels, list) or len(pixels) != PIXELS or not all(type(p) is int for p in pixels):
            size = len(pixels) if isinstance(pixels, list) else 0
            raise InvalidField(
                f"input {i}: an array of {size} items; an image is {PIXELS} whole numbers 0-255 (28x28, row-major)",
                "input",
            )
    array = to_pixels(np.asarray(request.inputs, dtype=np.int64), "uint8", "as pixels", "send whole numbers 0-255")
    return array.reshape(-1, IMAGE_SIDE, IMAGE_SIDE), None


def model_for(plane: DataPlane, request: Request, name: str, version: str | None) -> ServedModel:
    try:
        served = plane.model(name, version)
    except NotFound as e:
        raise UnknownModel(e.detail) from e
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
        raise InvalidInput(f"Content-Type {quoted(media_type(request))} is not accepted; send application/json")
    body = await read_body(request, plane.limits.max_upload_bytes, "JSON body")
    parsed = parse_request(body)
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
    """When the version was trained (its card's provenance), in Unix seconds; 0 where the card does not say."""
    try:
        return int(datetime.fromisoformat(str(served.card.provenance.get("created"))).timestamp())
    except ValueError:
        return 0


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
    name, _, version = model.partition(":")
    return FastJSONResponse(model_object(model, model_for(plane_of(request), request, name, version or None)))
