"""Reading HTTP request bodies under their size limits: multipart image files, one image, JSON or raw pixels."""

from typing import Any

import orjson
from starlette.requests import Request

from service.core.errors import InvalidInput, TooLarge, UndecodableInput, UnsupportedMediaType, cut, quoted
from service.core.pixels import FILE_FIELD, Limits, check_count
from service.http.multipart import parse_multipart


async def read_body(request: Request, max_bytes: int, what: str = "request body") -> bytes:
    """The whole body, refused as soon as it is known to exceed `max_bytes` (from Content-Length, or streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{what} of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"{what} exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(body: bytes, shape: str = "") -> dict[str, Any]:
    """A JSON body that must be an object; `shape` says what it should hold, in the refusal."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise UndecodableInput(f"request JSON is not valid: {e}") from e
    if not isinstance(parsed, dict):
        raise UndecodableInput(f"request must be a JSON object{shape}")
    return parsed


def read_uploads(request: Request, body: bytes, limits: Limits) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each upload in the multipart field `file`, in order."""
    parts = parse_multipart(body, request.headers.get("content-type", ""), limits.max_batch_images + 16)
    uploads = [p for p in parts if p.name == FILE_FIELD]
    if any(p.filename is None for p in uploads):
        raise InvalidInput(f"multipart field '{FILE_FIELD}' must hold files, not text")
    if not uploads:
        fields = cut(", ".join(sorted({p.name for p in parts})) or "none")
        raise InvalidInput(
            f"multipart body has no '{FILE_FIELD}' field (fields found: {fields}); send images as '{FILE_FIELD}'"
        )
    check_count(len(uploads), limits)
    return [(p.filename or f"file {i}", p.content) for i, p in enumerate(uploads)]


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


ACCEPTED_BODIES = (
    "multipart/form-data (image files in the field 'file'), application/json ({\"images\": [...]}), "
    "image/png, image/jpeg, ... (one image as the whole body) or application/octet-stream (N x 784 uint8 pixels)"
)


async def read_images(request: Request, limits: Limits) -> tuple[str, bytes | list[tuple[str, bytes]]]:
    """Read and size-check the body; return its kind and raw content for decoding off the event loop."""
    kind = media_type(request)
    body_kinds = ("multipart/form-data", "application/json", "application/octet-stream")
    if kind not in body_kinds and not kind.startswith("image/"):
        raise UnsupportedMediaType(f"Content-Type {quoted(kind or 'missing')} is not accepted; send {ACCEPTED_BODIES}")
    if kind == "application/json":
        body = await read_body(request, min(limits.max_json_bytes, limits.max_upload_bytes), "JSON body")
    else:
        body = await read_body(request, limits.max_upload_bytes)
    if not body:
        raise InvalidInput("request body is empty; send image files or JSON images")
    if kind == "multipart/form-data":
        return kind, read_uploads(request, body, limits)
    if kind.startswith("image/"):
        return kind, [("body", body)]
    return kind, body
