"""Bodies already read -> a (N, 28, 28) uint8 batch: image files, JSON pixel arrays or raw pixels, and the one
check of pixel values and image counts that every transport uses."""

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from models import IMAGE_SIDE, Framing
from service.core.errors import InvalidInput, TooLarge, UndecodableInput, quoted
from service.core.imaging import decode_image, prepare_photo, require_model_size

# The multipart field of image files, named in the errors of a count of zero.
FILE_FIELD = "file"
Batch = NDArray[np.uint8]
PixelScale = Literal["uint8", "float"]


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    max_batch_images: int
    max_image_pixels: int
    max_json_bytes: int
    max_json_depth: int


def check_count(count: int, limits: Limits) -> None:
    if count == 0:
        raise InvalidInput(f"no images: send one or more files in the multipart field '{FILE_FIELD}', or JSON images")
    if count > limits.max_batch_images:
        raise TooLarge(f"{count} images in one request; the limit is {limits.max_batch_images}")


def decode_uploads(uploads: list[tuple[str, bytes]], limits: Limits, framing: Framing | None) -> Batch:
    batch = np.empty((len(uploads), IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    for i, (name, data) in enumerate(uploads):
        label = f"file {i} ({quoted(name)})"
        pixels = decode_image(data, limits.max_image_pixels, label)
        batch[i] = prepare_photo(pixels, framing) if framing else require_model_size(pixels, label)
    return batch


# A JSON string literal, escapes included; its brackets are text, not nesting.
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects, counted before parsing; brackets inside strings do not count."""
    raw = np.frombuffer(JSON_STRING.sub(b'""', body) if b'"' in body else body, dtype=np.uint8)
    steps = np.isin(raw, (ord("["), ord("{"))).astype(np.int32) - np.isin(raw, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def parse_json_images(body: bytes, limits: Limits, framing: Framing | None) -> Batch:
    """JSON {"images": [...], "dtype": "uint8" | "float"} -> batch, refusing anything that is not pixels."""
    if len(body) > limits.max_json_bytes:
        raise TooLarge(
            f"JSON body of {len(body)} bytes exceeds the limit of {limits.max_json_bytes} bytes; "
            "send fewer images per request, or application/octet-stream"
        )
    depth = json_depth(body)
    if depth > limits.max_json_depth:
        raise InvalidInput(
            f"JSON nested {depth} levels deep; the limit is {limits.max_json_depth} (images -> rows -> pixels)"
        )
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UndecodableInput(f"body is not valid JSON: {e}") from e
    if not isinstance(payload, dict) or "images" not in payload:
        raise InvalidInput('JSON body must be an object with an "images" list, e.g. {"images": [[[0, ...], ...]]}')
    images, dtype = payload["images"], payload.get("dtype", "uint8")
    if dtype not in ("uint8", "float"):
        raise InvalidInput(f'"dtype" must be "uint8" (0-255) or "float" (0-1), got {quoted(dtype)}')
    if not isinstance(images, list):
        raise InvalidInput('"images" must be a list of 28x28 or 784-long pixel arrays')
    check_count(len(images), limits)
    not_pixels = '"images" must hold only numbers in rows of equal length (ragged or non-numeric: {})'
    try:
        array = np.asarray(images)
    except (ValueError, TypeError) as e:
        raise InvalidInput(not_pixels.format(e)) from e
    if array.dtype.kind not in "iuf":  # strings, booleans, nulls and mixed objects are not pixels
        raise InvalidInput(not_pixels.format(f"found {array.dtype}"))
    pixels = to_pixels(array, dtype, f"for dtype {dtype!r}", 'send "dtype": "float" for values in [0, 1]')
    expected = ((IMAGE_SIDE, IMAGE_SIDE), (IMAGE_SIDE * IMAGE_SIDE,))
    if pixels.shape[1:] not in expected and not (framing and pixels.ndim == 3):
        raise InvalidInput(
            f"images have shape {list(pixels.shape[1:])}; expected [28, 28] or [784]"
            + ("" if framing else " (or any [H, W] with resize=true)")
        )
    if framing and pixels.ndim == 3:
        return np.stack([prepare_photo(p, framing) for p in pixels])
    return pixels.reshape(len(pixels), IMAGE_SIDE, IMAGE_SIDE)


def to_pixels(array: NDArray[Any], scale: PixelScale, scale_name: str, float_hint: str) -> Batch:
    """Numbers -> uint8 pixels: whole numbers in [0, 255], or floats in [0, 1] scaled by 255 and rounded.

    The one check of pixel values, for JSON bodies and Open Inference Protocol tensors alike; `scale_name`
    and `float_hint` word the errors in the caller's terms.
    """
    if array.dtype.kind not in "iuf":  # strings, booleans and objects are not pixels
        raise InvalidInput(f"pixels must be numbers; found {array.dtype} {scale_name}")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidInput("images contain NaN or Infinity; send finite pixel values")
    top = 1.0 if scale == "float" else 255.0
    if values.size and (values.min() < 0 or values.max() > top):
        raise InvalidInput(
            f"pixel values must lie in [0, {top:g}] {scale_name}; found [{values.min():g}, {values.max():g}]"
        )
    if scale == "float":
        values = values * 255.0
    elif not np.array_equal(values, np.round(values)):
        raise InvalidInput(f"uint8 pixels must be whole numbers; {float_hint}")
    return np.round(values).astype(np.uint8)


def parse_raw_pixels(body: bytes, limits: Limits) -> Batch:
    """application/octet-stream: N images of 784 uint8 pixels each, row-major, back to back."""
    side = IMAGE_SIDE * IMAGE_SIDE
    if len(body) % side:
        raise InvalidInput(f"octet-stream body of {len(body)} bytes is not a whole number of {side}-byte 28x28 images")
    check_count(len(body) // side, limits)
    return np.frombuffer(body, dtype=np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE).copy()  # torch wants it writable


def decode_batch(kind: str, content: bytes | list[tuple[str, bytes]], limits: Limits, framing: Framing | None) -> Batch:
    """Pixels of every image; `framing` (resize=true) prepares pictures of any size the data set's way."""
    if isinstance(content, list):
        return decode_uploads(content, limits, framing)
    if kind == "application/octet-stream":
        if framing:
            raise InvalidInput("resize=true needs image files or JSON arrays; octet-stream bodies are 28x28 already")
        return parse_raw_pixels(content, limits)
    return parse_json_images(content, limits, framing)
