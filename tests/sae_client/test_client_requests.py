"""The Python client's requests and its reading of answers, through an injected httpx transport (fast).

tests/sae_client/test_client.py runs the same client against a real server.
"""

import asyncio
import io
from pathlib import Path

import httpx
import numpy as np
import pytest

from sae_client import AsyncClient, Client, Embeddings, SAEError
from tests.images import digit_like, png_bytes

PREDICTION = {
    "label": 1,
    "class_name": "1",
    "probabilities": {"0": 0.1, "1": 0.9},
    "top_k": [],
    "in_distribution": True,
}
ANSWERED = {**PREDICTION, "model_version": 2}  # each prediction as the client hands it back


class Recorder:
    """An httpx MockTransport handler: keeps each request, answers like the service would."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.params.get("model") == "cifar":
            return httpx.Response(404, json={"detail": "unknown model 'cifar'; known models: fashion-mnist, mnist"})
        count = self.image_count(request)
        if request.url.path == "/classify":
            return httpx.Response(200, json={"model": "mnist", "model_version": 2, "predictions": [PREDICTION] * count})
        if request.url.path == "/reconstruct":
            items = [{"pixels": [[7] * 28] * 28, "reconstruction_error": 0.25}] * count
            return httpx.Response(200, json={"model": "mnist", "model_version": 2, "reconstructions": items})
        if request.url.path == "/embed":
            buffer = io.BytesIO()
            np.save(buffer, np.full((count, 256), 0.5, np.float32))
            headers = {"Content-Type": "application/x-npy", "X-Model-Version": "2"}
            return httpx.Response(200, content=buffer.getvalue(), headers=headers)
        return httpx.Response(200, json={"models": [{"name": "mnist"}]})

    @staticmethod
    def image_count(request: httpx.Request) -> int:
        kind = request.headers.get("content-type", "")
        if kind == "application/octet-stream":
            return len(request.content) // 784
        return request.content.count(b'name="file"')


def test_uint8_arrays_go_as_raw_pixels_with_the_key_model_and_top_k() -> None:
    recorder = Recorder()
    images = np.stack([digit_like(i) for i in range(3)])
    with Client("http://sae", api_key="secret", model="fashion-mnist", transport=httpx.MockTransport(recorder)) as c:
        answer = c.classify(images, top_k=1)
    (request,) = recorder.requests
    assert request.method == "POST" and request.url.path == "/classify"
    assert dict(request.url.params) == {"model": "fashion-mnist", "top_k": "1"}
    assert request.headers["authorization"] == "Bearer secret"
    assert request.headers["content-type"] == "application/octet-stream" and request.content == images.tobytes()
    assert answer == [ANSWERED] * 3


def test_paths_bytes_floats_and_one_image_go_as_files_and_one_answer_comes_back(tmp_path: Path) -> None:
    recorder = Recorder()
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(digit_like(1)))
    with Client("http://sae", transport=httpx.MockTransport(recorder)) as client:
        assert client.classify(path) == ANSWERED
        assert client.classify([path, path.read_bytes(), digit_like(2) / 255.0], resize=True) == [ANSWERED] * 3
    single, batch = recorder.requests
    assert single.headers["content-type"].startswith("multipart/form-data") and "authorization" not in single.headers
    assert batch.content.count(b'name="file"') == 3 and batch.url.params["resize"] == "true"


def test_reconstruct_and_embed_ask_for_their_formats_and_version_and_read_them() -> None:
    recorder = Recorder()
    with Client("http://sae", transport=httpx.MockTransport(recorder)) as client:
        one = client.reconstruct(digit_like(0), version=2)
        two = client.reconstruct(np.stack([digit_like(0), digit_like(1)]))
        codes = client.embed(np.stack([digit_like(0), digit_like(1)]), layer=1, version=2)
        code = client.embed(digit_like(0))
    assert one.pixels.shape == (28, 28) and one.pixels.dtype == np.uint8 and int(one.pixels[0, 0]) == 7
    assert isinstance(one.reconstruction_error, float) and one.reconstruction_error == 0.25
    assert two.pixels.shape == (2, 28, 28) and np.asarray(two.reconstruction_error).tolist() == [0.25, 0.25]
    assert one.model_version == two.model_version == 2
    assert codes.embeddings.shape == (2, 256) and codes.embeddings.dtype == np.float32
    assert codes.layer == 1 and codes.model_version == 2
    assert code.embeddings.shape == (256,) and code.layer == 2
    reconstruct, _, embed, _ = recorder.requests
    assert reconstruct.headers["accept"] == "application/json" and reconstruct.url.params["version"] == "2"
    assert embed.headers["accept"] == "application/x-npy" and dict(embed.url.params) == {"layer": "1", "version": "2"}


def test_a_refusal_raises_sae_error_with_the_servers_detail() -> None:
    with Client("http://sae", transport=httpx.MockTransport(Recorder())) as client, pytest.raises(SAEError) as caught:
        client.classify(digit_like(0), model="cifar")
    assert caught.value.status_code == 404 and caught.value.detail.startswith("unknown model 'cifar'")


def test_the_async_client_sends_the_same_requests() -> None:
    recorder = Recorder()
    images = np.stack([digit_like(i) for i in range(2)])

    async def calls() -> tuple[object, object, list[dict[str, object]]]:
        async with AsyncClient("http://sae", api_key="k", transport=httpx.MockTransport(recorder)) as client:
            return await client.classify(images), await client.embed(images), await client.models()

    predictions, codes, models = asyncio.run(calls())
    assert predictions == [ANSWERED] * 2 and models == [{"name": "mnist"}]
    assert isinstance(codes, Embeddings) and codes.embeddings.shape == (2, 256) and codes.model_version == 2
    classify, embed, listing = recorder.requests
    assert classify.content == images.tobytes() and embed.content == images.tobytes()
    assert {r.headers["authorization"] for r in recorder.requests} == {"Bearer k"} and listing.url.path == "/models"


def test_a_transport_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="Client needs BaseTransport, got AsyncHTTPTransport"):
        Client("http://sae", transport=httpx.AsyncHTTPTransport())
    with pytest.raises(TypeError, match="AsyncClient needs AsyncBaseTransport, got HTTPTransport"):
        AsyncClient("http://sae", transport=httpx.HTTPTransport())


def test_the_refusal_detail_survives_a_body_that_is_not_json() -> None:
    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with Client("http://sae", transport=httpx.MockTransport(plain)) as client, pytest.raises(SAEError) as caught:
        client.models()
    assert caught.value.status_code == 502 and "bad gateway" in caught.value.detail
