"""The Python client against a real server (slow)."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from sae_client import AsyncClient, Client, SAEError
from tests.checkpoints import write_tiny_artifacts
from tests.images import digit_like, png_bytes
from tests.servers import free_port, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = write_tiny_artifacts(tmp_path_factory.mktemp("artifacts"))
    process, url = start_server(root, SAE_API_KEYS="secret")
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_every_image_form_gives_the_same_answer(server: str, tmp_path: Path) -> None:
    pixels = digit_like(5)
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(pixels))
    with Client(server, api_key="secret") as client:
        answers = [
            client.classify(form)["probabilities"]
            for form in (str(path), path, path.read_bytes(), Image.fromarray(pixels), pixels, pixels / 255.0)
        ]
        for answer in answers[1:]:
            assert answer == pytest.approx(answers[0], abs=1e-6)
        batch = client.classify([pixels, digit_like(6)], model="fashion-mnist", top_k=2)
        assert len(batch) == 2 and len(batch[0]["top_k"]) == 2
        stacked = client.classify(np.stack([pixels, digit_like(6)]), model="fashion-mnist")
        assert [p["label"] for p in stacked] == [p["label"] for p in batch]


def test_embed_and_reconstruct_shapes_and_versions(server: str) -> None:
    images = np.stack([digit_like(i) for i in range(3)])
    with Client(server, api_key="secret", model="mnist") as client:
        codes = client.embed(images)
        assert codes.embeddings.shape == (3, 256) and codes.layer == 2 and codes.model_version == 1
        assert client.embed(images[0], layer=1, version=1).embeddings.shape == (400,)
        rebuilt = client.reconstruct(images, version=1)
        assert rebuilt.pixels.shape == (3, 28, 28) and rebuilt.pixels.dtype == np.uint8 and rebuilt.model_version == 1
        assert np.asarray(rebuilt.reconstruction_error).shape == (3,)
        one = client.reconstruct(images[0])
        assert one.pixels.shape == (28, 28) and isinstance(one.reconstruction_error, float)
        assert one.reconstruction_error == pytest.approx(float(np.asarray(rebuilt.reconstruction_error)[0]))
        assert client.classify(images[0], version=1)["model_version"] == 1
        for call in (client.classify, client.reconstruct, client.embed):
            with pytest.raises(SAEError) as refused:
                call(images, version=9)
            assert refused.value.status_code == 404 and "has no version 9" in refused.value.detail
        assert {m["name"] for m in client.models()} == {"mnist", "fashion-mnist"}


def test_errors_carry_the_server_detail(server: str) -> None:
    with Client(server, api_key="wrong") as client, pytest.raises(SAEError) as info:
        client.classify(digit_like(1))
    assert info.value.status_code == 401 and info.value.detail == "invalid API key"
    with Client(server, api_key="secret") as client, pytest.raises(SAEError) as info:
        client.classify(np.zeros((5, 5), np.uint8))
    assert info.value.status_code == 422 and "5x5 pixels" in info.value.detail


def test_the_async_client_matches_the_sync_one(server: str) -> None:
    images = [digit_like(i) for i in range(4)]
    with Client(server, api_key="secret") as client:
        expected = [p["label"] for p in client.classify(images)]

    async def run() -> list[list[int]]:
        async with AsyncClient(server, api_key="secret") as client:
            results = await asyncio.gather(*(client.classify(images) for _ in range(5)))
            assert (await client.embed(images, version=1)).embeddings.shape == (4, 256)
            assert (await client.reconstruct(images[0], version=1)).model_version == 1
            return [[p["label"] for p in r] for r in results]

    assert asyncio.run(run()) == [expected] * 5


def test_connection_failures_are_retried_then_raised() -> None:
    port = free_port()  # nothing listens there
    with Client(f"http://127.0.0.1:{port}", retries=2, timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.classify(digit_like(1))


def test_similar_and_the_reference_image_it_links_to(server: str) -> None:
    images = np.stack([digit_like(i) for i in range(2)])
    with Client(server, api_key="secret", model="mnist") as client:
        one = client.similar(images[0], k=4)
        batch = client.similar(images, k=4)
        assert [n["index"] for n in one["neighbours"]] == [n["index"] for n in batch[0]["neighbours"]]
        assert len(batch) == 2 and one["model_version"] == 1 and one["metric"] == "cosine"
        assert set(one["vote"]) == {"label", "class_name", "share", "k", "agrees"}
        nearest = one["neighbours"][0]
        shown = client.reference_image(nearest["index"], version=1)
        assert shown.pixels.shape == (28, 28) and shown.model_version == 1
        assert (shown.label, shown.class_name) == (nearest["label"], nearest["class_name"])
        with pytest.raises(SAEError) as refused:
            client.reference_image(1)  # an odd index: held out of the tiny reference set
        assert refused.value.status_code == 404 and "is not in model 'mnist'" in refused.value.detail

    async def run() -> None:
        async with AsyncClient(server, api_key="secret", model="fashion-mnist") as client:
            answer = await client.similar(images[1], k=2)
            shown = await client.reference_image(answer["neighbours"][1]["index"])
            assert shown.class_name == answer["neighbours"][1]["class_name"] == f"c{shown.label}"

    asyncio.run(run())
