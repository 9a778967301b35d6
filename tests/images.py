"""Test pictures: a digit-like stroke, pictures encoded in a format, and an upload of one as the field `file`."""

import io

import numpy as np
from PIL import Image

from bench.harness import png_bytes

__all__ = ["digit_like", "encoded", "png_bytes", "upload"]


def digit_like(seed: int) -> np.ndarray:
    """A 28x28 uint8 image: a bright stroke whose place depends on the seed."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((28, 28), np.uint8)
    row, col = rng.integers(4, 20, 2)
    pixels[row : row + 6, col : col + 3] = 255
    pixels[row, col : col + 7] = 200
    return pixels


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def upload(
    data: bytes, name: str = "x.png", kind: str = "image/png"
) -> list[tuple[str, tuple[str | None, bytes, str]]]:
    return [("file", (name, data, kind))]
