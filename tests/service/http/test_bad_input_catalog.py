"""Hostile and odd inputs: each gets the right status and a detail that says what was wrong,
while a good request sent alongside still gets its right answer."""

import json
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from tests.checkpoints import write_tiny_artifacts
from tests.images import digit_like, encoded, png_bytes, upload
from tests.service.apps import make_settings

MULTIPART = "multipart/form-data; boundary=XyZ"


def png_bomb(side: int = 20000) -> bytes:
    """A valid PNG header declaring side x side pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def gray(side: int = 28) -> Image.Image:
    return Image.fromarray(np.resize(digit_like(1), (side, side)))


def animated_gif() -> bytes:
    frames = [gray(), Image.fromarray(np.full((28, 28), 255, np.uint8))]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])


@dataclass
class Case:
    name: str
    endpoint: str
    status: int
    phrase: str
    files: list[tuple[str, tuple[str | None, bytes, str]]] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def as_json(payload: object) -> dict[str, object]:
    return {"content": json.dumps(payload).encode(), "headers": {"Content-Type": "application/json"}}


def sixteen_bit(side: int) -> bytes:
    return encoded(Image.fromarray(np.resize(digit_like(1), (side, side)).astype(np.uint16) * 257), "PNG")


CASES = [
    Case("empty body", "/classify", 422, "request body is empty", content=b"", headers={"Content-Type": MULTIPART}),
    Case("truncated PNG", "/embed", 400, "truncated or damaged", files=upload(png_bytes(digit_like(1))[:70])),
    Case(
        "random bytes as image/png",
        "/reconstruct",
        400,
        "not an image",
        content=bytes(range(256)) * 4,
        headers={"Content-Type": "image/png"},
    ),
    Case("text file", "/classify", 400, "not an image", files=upload(b"hello, world\n", "notes.txt", "text/plain")),
    Case("16-bit PNG, wrong size", "/embed", 422, "32x32 pixels", files=upload(sixteen_bit(32))),
    Case(
        "palette PNG, wrong size",
        "/reconstruct",
        422,
        "32x32 pixels",
        files=upload(encoded(gray(32).convert("P"), "PNG")),
    ),
    Case(
        "RGBA PNG, wrong size", "/classify", 422, "32x32 pixels", files=upload(encoded(gray(32).convert("RGBA"), "PNG"))
    ),
    Case(
        "CMYK JPEG, wrong size",
        "/embed",
        422,
        "32x32 pixels",
        files=upload(encoded(gray(32).convert("CMYK"), "JPEG"), "c.jpg", "image/jpeg"),
    ),
    Case(
        "1x1 image",
        "/classify",
        422,
        "1x1 pixels; the models take 28x28",
        files=upload(png_bytes(np.zeros((1, 1), np.uint8))),
    ),
    Case("20000x20000 PNG bomb", "/reconstruct", 413, "too many pixels", files=upload(png_bomb())),
    Case(
        "PNG bomb as raw body",
        "/classify",
        413,
        "too many pixels",
        content=png_bomb(),
        headers={"Content-Type": "image/png"},
    ),
    Case(
        "wrong content type",
        "/embed",
        415,
        "'text/plain' is not accepted",
        content=b"0,0,0",
        headers={"Content-Type": "text/plain"},
    ),
    Case(
        "no content type", "/classify", 415, "'missing' is not accepted", content=b"abc", headers={"Content-Type": ""}
    ),
    Case(
        "multipart without the field",
        "/classify",
        422,
        "no 'file' field",
        files=[("image", ("a.png", png_bytes(digit_like(1)), "image/png"))],
    ),
    Case(
        "multipart without closing boundary",
        "/embed",
        400,
        "no closing boundary",
        content=b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        headers={"Content-Type": MULTIPART},
    ),
    Case("zero images", "/reconstruct", 422, "no images", **as_json({"images": []})),  # type: ignore[arg-type]
    Case("too many images", "/classify", 413, "the limit is 8", **as_json({"images": [[0] * 784] * 9})),  # type: ignore[arg-type]
    Case(
        "NaN",
        "/classify",
        422,
        "NaN or Infinity",
        content=b'{"images": [[NaN]]}',
        headers={"Content-Type": "application/json"},
    ),
    Case(
        "Infinity",
        "/embed",
        422,
        "NaN or Infinity",
        content=b'{"images": [[-Infinity]]}',
        headers={"Content-Type": "application/json"},
    ),
    Case("negative values", "/reconstruct", 422, "must lie in [0, 255]", **as_json({"images": [[-3] * 784]})),  # type: ignore[arg-type]
    Case("values over 255", "/classify", 422, "must lie in [0, 255]", **as_json({"images": [[300] * 784]})),  # type: ignore[arg-type]
    Case(
        "float values over 1",
        "/embed",
        422,
        "must lie in [0, 1]",
        **as_json({"images": [[1.5] * 784], "dtype": "float"}),
    ),  # type: ignore[arg-type]
    Case("ragged rows", "/classify", 422, "ragged", **as_json({"images": [[[0] * 28] * 27 + [[0] * 5]]})),  # type: ignore[arg-type]
    Case("27x28", "/embed", 422, "shape [27, 28]", **as_json({"images": [[[0] * 28] * 27]})),  # type: ignore[arg-type]
    Case("strings", "/reconstruct", 422, "ragged or non-numeric", **as_json({"images": [["0"] * 784]})),  # type: ignore[arg-type]
    Case(
        "deep nesting",
        "/classify",
        422,
        "levels deep",
        content=b'{"images": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        headers={"Content-Type": "application/json"},
    ),
    Case("huge array", "/embed", 413, "JSON body", **as_json({"images": [[255] * 784] * 2000})),  # type: ignore[arg-type]
    Case(
        "not JSON",
        "/classify",
        400,
        "not valid JSON",
        content=b"{'images': }",
        headers={"Content-Type": "application/json"},
    ),
    Case("JSON list, not object", "/classify", 422, 'object with an "images" list', **as_json([[0] * 784])),  # type: ignore[arg-type]
    Case(
        "octet-stream of odd length",
        "/reconstruct",
        422,
        "not a whole number of 784-byte",
        content=b"\0" * 800,
        headers={"Content-Type": "application/octet-stream"},
    ),
    Case(
        "unknown model",
        "/classify?model=cifar10",
        404,
        "unknown model 'cifar10'",
        files=upload(png_bytes(digit_like(1))),
    ),
    Case(
        "path in model name",
        "/embed?model=../../etc/passwd",
        404,
        "unknown model '../../etc/passwd'; known models",
        files=upload(png_bytes(digit_like(1))),
    ),
    Case(
        "odd unicode file name",
        "/classify",
        400,
        "file 0 ('\\u202eevil\\u200b\U0001f600.png')",
        files=upload(b"junk", "\u202eevil\u200b\U0001f600.png"),
    ),
    Case("unknown query value", "/embed?layer=seven", 422, "layer", files=upload(png_bytes(digit_like(1)))),
    Case(
        "unanswerable Accept",
        "/reconstruct",
        406,
        "offers image/png, application/json",
        files=upload(png_bytes(digit_like(1))),
        headers={"Accept": "text/csv"},
    ),
    Case(
        "resize with raw pixels",
        "/classify?resize=true",
        422,
        "resize=true needs image files",
        content=b"\0" * 784,
        headers={"Content-Type": "application/octet-stream"},
    ),
    Case(
        "body over the upload limit",
        "/classify",
        413,
        "exceeds the limit of 200000 bytes",
        files=upload(b"\0" * 200_001),
    ),
]


@pytest.fixture(scope="module")
def catalog_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = write_tiny_artifacts(tmp_path_factory.mktemp("artifacts"))
    settings = make_settings(root, max_batch_images=8, max_json_bytes=100_000, max_upload_bytes=200_000)
    with TestClient(create_app(settings)) as client:
        yield client


GOOD = png_bytes(digit_like(77))


def test_the_catalog_is_large_enough() -> None:
    assert len({c.name for c in CASES}) >= 30
    assert {c.endpoint.split("?")[0] for c in CASES} == {"/classify", "/embed", "/reconstruct"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_and_a_good_request_alongside_is_answered(catalog_client: TestClient, case: Case) -> None:
    expected = catalog_client.post("/classify", files=upload(GOOD)).json()["predictions"][0]["probabilities"]

    def bad() -> object:
        return catalog_client.post(case.endpoint, files=case.files, content=case.content, headers=case.headers)

    def good() -> object:
        return catalog_client.post("/classify", files=upload(GOOD))

    with ThreadPoolExecutor(2) as pool:
        bad_future, good_future = pool.submit(bad), pool.submit(good)
        response, good_response = bad_future.result(), good_future.result()
    assert response.status_code == case.status, response.text  # type: ignore[attr-defined]
    assert case.phrase in response.json()["detail"], response.json()["detail"]  # type: ignore[attr-defined]
    assert good_response.status_code == 200  # type: ignore[attr-defined]
    assert good_response.json()["predictions"][0]["probabilities"] == pytest.approx(expected, abs=1e-6)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [sixteen_bit(28), encoded(gray().convert("P"), "PNG"), encoded(gray().convert("RGBA"), "PNG"), animated_gif()],
    ids=["16-bit PNG", "palette PNG", "RGBA PNG", "animated GIF"],
)
def test_odd_but_valid_28x28_images_are_converted_and_answered(catalog_client: TestClient, data: bytes) -> None:
    response = catalog_client.post("/classify", files=upload(data))
    assert response.status_code == 200, response.text
    probabilities = response.json()["predictions"][0]["probabilities"]
    reference = catalog_client.post("/classify", files=upload(png_bytes(np.asarray(gray())))).json()
    assert probabilities == pytest.approx(reference["predictions"][0]["probabilities"], abs=1e-6)
