import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from models import FULL_FRAME, MNIST_FRAMING
from service.core.errors import TooLarge, UndecodableInput, UnsupportedMediaType
from service.core.imaging import decode_image, plain_gray_png, prepare_photo, to_grayscale
from tests.images import digit_like, encoded


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_accepted_format_decodes_to_grayscale(fmt: str) -> None:
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:20, 10:14] = 255
    decoded = decode_image(encoded(Image.fromarray(pixels).convert("RGB"), fmt), 10**6)
    assert decoded.shape == (28, 28) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - pixels).max() <= (40 if fmt in ("JPEG", "WEBP") else 0)


def test_colour_uses_luma_and_sixteen_bits_scale_down() -> None:
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    assert to_grayscale(red)[0, 0] == 76  # 0.299 * 255
    wide = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert to_grayscale(wide)[0, 0] == 255
    palette = Image.fromarray(np.full((2, 2), 200, np.uint8)).convert("P")
    assert to_grayscale(palette)[0, 0] == 200


def test_only_the_first_frame_of_an_animation_is_read() -> None:
    frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (10, 250)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data, 10**6).max() <= 12


def test_pixel_limit_is_read_from_the_header() -> None:
    big = encoded(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(TooLarge, match="3000x3000 pixels; the limit is 1000000"):
        decode_image(big, 1_000_000)


def test_refusals() -> None:
    with pytest.raises(UndecodableInput, match="is empty"):
        decode_image(b"", 100)
    with pytest.raises(UnsupportedMediaType, match=r"^image is in the PPM format; accepted formats are BMP, GIF,"):
        decode_image(encoded(Image.new("L", (28, 28)), "PPM"), 10**6)


def test_a_dark_stroke_on_white_paper_becomes_an_mnist_sample() -> None:
    paper = np.full((300, 200), 230, np.uint8)
    paper[50:250, 120:140] = 20  # a tall '1', off-centre
    out = prepare_photo(paper, MNIST_FRAMING)
    assert out.shape == (28, 28)
    rows, _ = np.nonzero(out > 50)
    assert rows.max() - rows.min() + 1 <= 20 and rows.max() - rows.min() + 1 >= 18  # fitted into the 20-pixel box
    ys, xs = np.indices(out.shape)
    mass = out.astype(float)
    assert abs((ys * mass).sum() / mass.sum() - 13.5) <= 1 and abs((xs * mass).sum() / mass.sum() - 13.5) <= 1
    assert out[0].max() == 0 and out[:, 0].max() == 0  # background is black


def test_garments_fill_the_frame_and_a_blank_picture_stays_blank() -> None:
    photo = np.full((100, 100), 255, np.uint8)
    photo[10:90, 30:70] = 60
    out = prepare_photo(photo, FULL_FRAME)
    rows = np.nonzero(out.max(1) > 50)[0]
    assert rows.max() - rows.min() + 1 == 28
    assert prepare_photo(np.full((50, 50), 255, np.uint8), MNIST_FRAMING).max() == 0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_exif_orientation_is_applied(fmt: str) -> None:
    """A phone photo stores 'rotate 90 degrees clockwise to view' (orientation 6) instead of turning its pixels."""
    pixels = np.zeros((20, 28), np.uint8)  # wider than tall, a bar along the top edge
    pixels[:4, :] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encoded(Image.fromarray(pixels), fmt, exif=exif.tobytes()), 10**6)
    assert decoded.shape == (28, 20)  # turned upright: taller than wide
    assert decoded[:, -4:].min() >= 200 and decoded[:, :-6].max() <= 60  # the bar now runs down the right edge
    plain = decode_image(encoded(Image.fromarray(pixels), fmt), 10**6)
    assert plain.shape == (20, 28)


def chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def pillow_pixels(data: bytes) -> np.ndarray:
    """What Image.open makes of the file, turned as its EXIF says: the general path, which the plain-PNG one must
    equal."""
    image = Image.open(io.BytesIO(data))
    return to_grayscale(ImageOps.exif_transpose(image) or image)


def test_plain_grayscale_pngs_take_the_short_path_and_give_pillows_pixels() -> None:
    rng = np.random.default_rng(0)
    images = [digit_like(seed) for seed in range(20)] + [rng.integers(0, 256, (28, 28), dtype=np.uint8)]
    images += [np.zeros((28, 28), np.uint8), rng.integers(0, 256, (40, 17), dtype=np.uint8)]
    for pixels in images:
        for options in ({}, {"optimize": True}, {"compress_level": 0}):
            data = encoded(Image.fromarray(pixels), "PNG", **options)
            plain = plain_gray_png(data, 10**6)
            assert plain is not None and np.array_equal(plain, pixels) and np.array_equal(plain, pillow_pixels(data))
            assert np.array_equal(decode_image(data, 10**6), pixels)


def test_every_other_png_takes_pillows_path() -> None:
    pixels = digit_like(1)
    gray = Image.fromarray(pixels)
    transparent = gray.copy()
    transparent.info["transparency"] = 0
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated
    others = {
        "RGBA": encoded(gray.convert("RGBA"), "PNG"),
        "16-bit": encoded(Image.fromarray(pixels.astype(np.uint16) * 257), "PNG"),
        "palette": encoded(gray.convert("P"), "PNG"),
        "transparency": encoded(transparent, "PNG", transparency=0),
        "EXIF rotation": encoded(gray, "PNG", exif=exif.tobytes()),
    }
    for what, data in others.items():
        assert plain_gray_png(data, 10**6) is None, what
        assert np.array_equal(decode_image(data, 10**6), pillow_pixels(data)), what
    text = PngImagePlugin.PngInfo()
    text.add_text("XML:com.adobe.xmp", "<x:xmpmeta><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>")
    assert plain_gray_png(encoded(gray, "PNG", pnginfo=text), 10**6) is None  # text chunks can carry a rotation
    plain = encoded(gray, "PNG")
    assert plain_gray_png(plain[:33] + chunk(b"pHYs", bytes(9)) + plain[33:], 10**6) is not None  # harmless
    header, image_data = plain[8:33], plain[33:-12]
    assert image_data[4:8] == b"IDAT"
    body = image_data[8:-4]
    split = chunk(b"IDAT", body[:10]) + chunk(b"pHYs", bytes(9)) + chunk(b"IDAT", body[10:])
    assert plain_gray_png(plain[:33] + split + plain[-12:], 10**6) is None  # image data split by another chunk
    assert (
        plain_gray_png(plain[:33] + chunk(b"IDAT", body[:10]) + chunk(b"IDAT", body[10:]) + plain[-12:], 10**6)
        is not None
    )
    second_header = plain[:-12] + header + plain[-12:]
    assert plain_gray_png(second_header, 10**6) is None
    # Pillow writes no interlaced PNG: the same file with IHDR's interlace byte set (and its CRC mended)
    header = bytearray(plain[12:29])
    header[12] = 1
    interlaced = plain[:12] + bytes(header) + zlib.crc32(header).to_bytes(4, "big") + plain[33:]
    assert plain_gray_png(interlaced, 10**6) is None
    damaged = plain[:40] + bytes([plain[40] ^ 0xFF]) + plain[41:]
    for what, data in {"truncated": plain[:-20], "damaged": damaged, "no IEND": plain[:-12]}.items():
        assert plain_gray_png(data, 10**6) is None, what
    with pytest.raises(UndecodableInput):  # Pillow's answer to it, as before
        decode_image(damaged, 10**6)
    assert plain_gray_png(plain, 783) is None  # over the pixel limit: refused the general way
    with pytest.raises(TooLarge, match="28x28 pixels; the limit is 783"):
        decode_image(plain, 783)
