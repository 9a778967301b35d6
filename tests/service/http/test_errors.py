import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.core.errors import NoModelLoaded
from service.core.forward import CLASSIFY
from service.core.pixels import json_depth
from tests.images import digit_like, png_bytes, upload
from tests.service.apps import make_settings


def assert_error(response, status: int, *phrases: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for phrase in phrases:
        assert phrase in detail, detail


def test_unknown_model_is_404_listing_known_models(client: TestClient) -> None:
    response = client.post("/classify?model=cifar", files=upload(png_bytes(digit_like(0))))
    assert_error(response, 404, "unknown model 'cifar'", "known models: fashion-mnist, mnist")


def test_undecodable_and_unsupported_images(client: TestClient) -> None:
    assert_error(client.post("/classify", files=upload(b"not an image at all")), 400, "not an image")
    assert_error(client.post("/classify", files=upload(png_bytes(digit_like(0))[:60])), 400, "truncated or damaged")
    ico = io.BytesIO()
    Image.fromarray(digit_like(0)).save(ico, format="ICO")
    response = client.post("/classify", files=upload(ico.getvalue(), "x.ico"))
    assert_error(response, 415, "is in the ICO format; accepted formats are BMP, GIF, JPEG, PNG, TIFF, WEBP")


def test_unsupported_content_type_is_415(client: TestClient) -> None:
    response = client.post("/classify", content=b"hello", headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "'text/plain' is not accepted", "multipart/form-data")


def test_oversized_body_is_refused_from_its_content_length(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, max_upload_bytes=1000))) as small:
        response = small.post("/classify", files=upload(b"\0" * 5000))
        assert_error(response, 413, "exceeds the limit of 1000 bytes")


def test_too_many_and_zero_images(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, max_batch_images=2))) as small:
        many = [("file", (f"{i}.png", png_bytes(digit_like(i)), "image/png")) for i in range(3)]
        assert_error(small.post("/classify", files=many), 413, "3 images in one request; the limit is 2")
        assert_error(small.post("/classify", json={"images": []}), 422, "no images")
        assert_error(small.post("/classify", files=upload(b"", "empty.png")), 400, "file 0 ('empty.png') is empty")
        assert_error(small.post("/classify", files={"file": (None, "text")}), 422, "must hold files, not text")


def test_multipart_without_the_file_field(client: TestClient) -> None:
    response = client.post("/classify", files=[("image", ("a.png", png_bytes(digit_like(0)), "image/png"))])
    assert_error(response, 422, "no 'file' field", "fields found: image")


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ('{"images": [[NaN]]}', "NaN or Infinity"),
        ('{"images": [[Infinity]]}', "NaN or Infinity"),
        (json.dumps({"images": [[-1] * 784]}), "must lie in [0, 255]"),
        (json.dumps({"images": [[256] * 784]}), "must lie in [0, 255]"),
        (json.dumps({"images": [[0.5] * 784]}), "whole numbers"),
        (json.dumps({"images": [[2] * 784], "dtype": "float"}), "must lie in [0, 1]"),
        (json.dumps({"images": [[[0] * 28] * 27]}), "shape [27, 28]"),
        (json.dumps({"images": [[[0] * 28] * 27 + [[0] * 27]]}), "ragged or non-numeric"),
        (json.dumps({"images": [["a"] * 784]}), "ragged or non-numeric"),
        (json.dumps({"pictures": []}), 'object with an "images" list'),
        (json.dumps({"images": [[0] * 784], "dtype": "int16"}), '"dtype" must be'),
    ],
)
def test_bad_json_pixels_are_422(client: TestClient, body: str, phrase: str) -> None:
    response = client.post("/embed", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 422, phrase)


def test_invalid_json_is_400(client: TestClient) -> None:
    response = client.post("/classify", content=b"{images:", headers={"Content-Type": "application/json"})
    assert_error(response, 400, "not valid JSON")


def test_unacceptable_accept_header_is_406_on_every_inference_route(client: TestClient) -> None:
    for path, offered in (
        ("/classify", "offers application/json"),
        ("/reconstruct", "offers image/png, application/json"),
        ("/embed", "offers application/json, application/x-npy"),
    ):
        response = client.post(path, files=upload(png_bytes(digit_like(0))), headers={"Accept": "text/csv"})
        assert_error(response, 406, "cannot answer with 'text/csv'", offered)
    answered = client.post("/classify", files=upload(png_bytes(digit_like(0))), headers={"Accept": "text/*, */*;q=0.1"})
    assert answered.status_code == 200 and answered.headers["content-type"] == "application/json"


def test_bad_query_values_are_422(client: TestClient) -> None:
    assert_error(client.post("/embed?layer=3", files=upload(png_bytes(digit_like(0)))), 422, "layer")
    assert_error(client.post("/classify?top_k=0", files=upload(png_bytes(digit_like(0)))), 422, "top_k")
    assert_error(client.post("/classify?top_k=abc", files=upload(png_bytes(digit_like(0)))), 422, "query.top_k")
    # the model is looked up first: an unknown one is a 404 whatever the rest of the query says
    assert_error(client.post("/classify?model=nope&top_k=0", files=upload(png_bytes(digit_like(0)))), 404, "nope")


def test_unexpected_failure_is_a_generic_500_with_the_request_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(CLASSIFY, "forward", broken)
    client_no_raise = TestClient(client.app, raise_server_exceptions=False)
    response = client_no_raise.post(
        "/classify", files=upload(png_bytes(digit_like(0))), headers={"X-Request-ID": "abc123"}
    )
    assert_error(response, 500, "internal error; quote request id abc123")
    assert response.headers.get_list("x-request-id") == ["abc123"]  # once
    assert "secret" not in response.text
    assert "abc123" in caplog.text and "secret internals" in caplog.text


def test_a_model_that_failed_to_load_is_503_and_listed(tiny_artifacts: Path) -> None:
    weights = tiny_artifacts / "fashion-mnist" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with TestClient(create_app(make_settings(tiny_artifacts))) as client:
        response = client.post("/classify?model=fashion-mnist", files=upload(png_bytes(digit_like(0))))
        assert_error(response, 503, "model 'fashion-mnist' is not loaded", "does not match its card")
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models["mnist"]["loaded"] and not models["fashion-mnist"]["loaded"]
        assert "does not match its card" in models["fashion-mnist"]["error"]
        ready = client.get("/health/ready").json()
        assert ready["status"] == "ready" and ready["models"] == ["mnist"]
        assert "does not match its card" in ready["failed"]["fashion-mnist"]


def test_service_refuses_to_start_without_any_model(tmp_path: Path) -> None:
    with (
        pytest.raises(NoModelLoaded, match="no model could be loaded"),
        TestClient(create_app(make_settings(tmp_path))),
    ):
        pass


def test_float_pixels_round_to_the_nearest_level(client: TestClient) -> None:
    pixels = digit_like(2)
    exact = client.post("/embed", json={"images": [pixels.tolist()]}).json()["embeddings"]
    nudged = (pixels / 255.0 + 0.001).clip(0, 1)
    close = client.post("/embed", json={"images": [nudged.tolist()], "dtype": "float"}).json()["embeddings"]
    assert np.allclose(exact, close, atol=1e-6)


def test_json_size_and_depth_limits(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, max_json_bytes=5000))) as small:
        big = json.dumps({"images": [[0] * 784] * 3})
        assert_error(
            small.post("/classify", content=big, headers={"Content-Type": "application/json"}), 413, "JSON body"
        )
        deep = '{"images": ' + "[" * 50 + "0" + "]" * 50 + "}"
        response = small.post("/classify", content=deep, headers={"Content-Type": "application/json"})
        assert_error(response, 422, "nested 51 levels deep; the limit is 6")


def test_a_body_without_content_length_is_refused_while_streaming(tiny_artifacts: Path) -> None:
    chunks = iter([b"\0" * 600, b"\0" * 600])  # chunked transfer: no Content-Length to check up front
    with TestClient(create_app(make_settings(tiny_artifacts, max_upload_bytes=1000))) as small:
        response = small.post("/classify", content=chunks, headers={"Content-Type": "application/octet-stream"})
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "request body exceeds the limit of 1000 bytes")


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b'{"images": [[0]]}', 3),
        (b'{"note": "[[[[[[[[[[", "images": [[0]]}', 3),
        (b'{"note": "a \\" quote then [[[[[[[[[[", "images": [[0]]}', 3),
        (b'{"note": "ends in a backslash \\\\", "more": [[[[[[[[0]]]]]]]]}', 9),
        (b"[" * 50 + b"]" * 50, 50),
    ],
    ids=["plain", "brackets in a string", "escaped quote", "escaped backslash", "deep"],
)
def test_json_depth_counts_nesting_not_brackets_in_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_a_valid_body_with_brackets_in_a_string_is_answered(client: TestClient) -> None:
    body = json.dumps({"note": "[" * 20, "images": [[0] * 784]})
    response = client.post("/classify", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
