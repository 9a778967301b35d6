"""Image bytes -> 28x28 uint8 grayscale, and the MNIST-style preprocessing of arbitrary photos.

Every image becomes 8-bit grayscale the same way: transparency is composited over black (the
MNIST background), colour is converted with ITU-R 601-2 luma (L = 0.299 R + 0.587 G + 0.114 B,
Pillow's "L" mode), 16-bit images are scaled to 8 bits, and only the first frame of an animation
is read.
"""

import io
import struct
import warnings
import zlib

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from models import IMAGE_SIDE, Framing
from service.core.errors import InvalidInput, TooLarge, UndecodableInput, UnsupportedMediaType

ACCEPTED_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"}
Pixels = NDArray[np.uint8]


def to_grayscale(image: Image.Image) -> Pixels:
    """Any Pillow image as a uint8 (H, W) array, converted as the module docstring says."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.int64)
        return np.round(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)
    if image.mode == "F":
        return np.round(np.clip(np.asarray(image, dtype=np.float64), 0, 255)).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.uint8)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAY8 = (8, 0, 0, 0, 0)  # IHDR's bit depth, colour type (grayscale), compression, filter method, interlace (none)


# Ancillary chunks that change nothing of a grayscale image's pixels or orientation as Pillow reads it; any other
# (text chunks can carry an EXIF or XMP rotation, which Image.open's path applies) sends a file the general way.
HARMLESS_CHUNKS = frozenset({b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"tIME", b"bKGD"})


def plain_gray_png(data: bytes, max_pixels: int) -> Pixels | None:
    """The pixels of an 8-bit grayscale PNG without interlacing, transparency or metadata that could turn it (what
    MNIST-style clients send), read by walking its chunks and inflating its image data with Pillow's own PNG
    decoder, without the machinery of Image.open (a third of the time, measured: docs/benchmarks.md, "Where a
    request's time goes"); None for any other file, which decode_image reads the general way, damaged ones too."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    position, end, size, previous = len(PNG_SIGNATURE), len(data), None, b""
    image_data: list[bytes] = []
    while position + 12 <= end:
        length, kind = struct.unpack_from(">I4s", data, position)
        body_end = position + 8 + length
        if body_end + 4 > end or zlib.crc32(data[position + 4 : body_end]) != int.from_bytes(
            data[body_end : body_end + 4]
        ):
            return None
        if kind == b"IHDR":
            width, height, *layout = struct.unpack_from(">IIBBBBB", data, position + 8) if length == 13 else (0, 0)
            if size is not None or tuple(layout) != GRAY8 or not 0 < width * height <= max_pixels:
                return None  # a second header, another layout, or over the limit
            size = (width, height)
        elif kind == b"IDAT":
            if size is None or (image_data and previous != b"IDAT"):
                return None  # image data before the header, or split by another chunk
            image_data.append(data[position + 8 : body_end])
        elif kind == b"IEND":
            break
        elif kind not in HARMLESS_CHUNKS:
            return None
        previous, position = kind, body_end + 4
    else:
        return None  # no IEND: truncated
    if size is None or not image_data:
        return None
    try:
        return np.asarray(Image.frombytes("L", size, b"".join(image_data), "zip", "L"))
    except (ValueError, OSError):
        return None


def decode_image(data: bytes, max_pixels: int, name: str = "image") -> Pixels:
    """Decode one uploaded file to grayscale pixels of whatever size it has."""
    if not data:
        raise UndecodableInput(f"{name} is empty; upload a PNG, JPEG, BMP, GIF, WebP or TIFF file")
    plain = plain_gray_png(data, max_pixels)
    if plain is not None:
        return plain
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise UndecodableInput(
                f"{name} is not an image Pillow can read; upload a PNG, JPEG, BMP, GIF, WebP or TIFF file"
            ) from e
        raise TooLarge(f"{name} declares too many pixels; the limit is {max_pixels} pixels") from e
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(
            f"{name} is in the {image.format} format; accepted formats are {', '.join(sorted(ACCEPTED_FORMATS))}"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(f"{name} is {width}x{height} pixels; the limit is {max_pixels} pixels (width x height)")
    try:
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # phone photos store their rotation in EXIF; no copy
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UndecodableInput(f"{name} could not be decoded ({e}); the file may be truncated or damaged") from e
    return to_grayscale(image)


def require_model_size(pixels: Pixels, name: str = "image") -> Pixels:
    if pixels.shape != (IMAGE_SIDE, IMAGE_SIDE):
        height, width = pixels.shape
        raise InvalidInput(
            f"{name} is {width}x{height} pixels; the models take {IMAGE_SIDE}x{IMAGE_SIDE}. "
            "Resize it yourself, or pass resize=true for MNIST-style preprocessing of any photo"
        )
    return pixels


def shift(frame: NDArray[np.float64], dy: int, dx: int) -> NDArray[np.float64]:
    """Move the content by whole pixels, filling with background."""
    out = np.zeros_like(frame)
    h, w = frame.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = frame[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def prepare_photo(pixels: Pixels, framing: Framing) -> Pixels:
    """Make an arbitrary grayscale picture look like a sample of the model's data set.

    Invert a light background, remove the background level, crop to the content, fit it into the
    data set's box (20x20 for MNIST, 28x28 for Fashion-MNIST) keeping its aspect ratio, and centre
    it in the 28x28 frame (by mass for MNIST, as its makers did).
    """
    values = pixels.astype(np.float64)
    border = np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])
    if np.median(border) > 127:
        values = 255.0 - values
    values = np.clip(values - np.median(values), 0, None)  # most of a photo is background
    peak = values.max()
    if peak <= 0:
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    values = values * (255.0 / peak)
    values[values < 0.25 * 255] = 0  # paper texture and shadows
    rows = np.flatnonzero(values.max(1))
    cols = np.flatnonzero(values.max(0))
    crop = values[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = framing.box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = Image.fromarray(crop.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    fitted = np.asarray(box, dtype=np.float64)
    frame = np.zeros((IMAGE_SIDE, IMAGE_SIDE))
    top, left = (IMAGE_SIDE - size[1]) // 2, (IMAGE_SIDE - size[0]) // 2
    frame[top : top + size[1], left : left + size[0]] = fitted
    total = frame.sum()
    if total > 0 and framing.centre_by_mass:
        ys, xs = np.indices(frame.shape)
        dy = round(IMAGE_SIDE / 2 - 0.5 - (ys * frame).sum() / total)
        dx = round(IMAGE_SIDE / 2 - 0.5 - (xs * frame).sum() / total)
        frame = shift(frame, dy, dx)
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)
