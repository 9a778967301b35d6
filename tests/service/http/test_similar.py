"""/similar and /reference/{model}/{index}.png on tiny checkpoints with reference sets (tests/checkpoints.py)."""

import asyncio
import io
import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from models import load_checkpoint, to_model_input
from models.card import REFERENCE_FILE
from models.layout import read_card
from models.reference import map_reference, normalised, vote
from service.app import create_app
from tests.checkpoints import REFERENCE_IMAGES
from tests.images import digit_like, png_bytes
from tests.service.apps import make_settings

RAW = {"Content-Type": "application/octet-stream"}


def expected(checkpoint: Path, pixels: np.ndarray, k: int) -> tuple[list[int], list[float], int]:
    """The k nearest reference images' indices and similarities, and the card's vote, computed here in float64
    from the checkpoint's own files, with no service in between."""
    card = read_card(checkpoint)
    reference = map_reference(checkpoint / REFERENCE_FILE, 256, 10)
    with torch.inference_mode():
        code = load_checkpoint(checkpoint).model.encode(to_model_input(torch.from_numpy(pixels[None])))
    query = normalised(code.numpy()).astype(np.float64)[0]
    scores = reference.vectors.astype(np.float64) @ query
    order = np.argsort(-scores, kind="stable")
    assert card.reference is not None
    voted = vote(reference.labels[order[: card.reference.vote_k]][None], 10)[0][0]
    return reference.indices[order[:k]].tolist(), scores[order[:k]].tolist(), int(voted)


def test_similar_lists_the_exact_nearest_reference_images_with_their_vote(
    client: TestClient, tiny_artifacts: Path
) -> None:
    pixels = np.stack([digit_like(0), digit_like(1)])
    response = client.post("/similar?k=7", content=pixels.tobytes(), headers=RAW)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["model_version"], body["metric"]) == ("mnist", 1, "cosine")
    assert body["reference"] == {"split": "train", "size": REFERENCE_IMAGES}
    classified = client.post("/classify", content=pixels.tobytes(), headers=RAW).json()["predictions"]
    for image, result, prediction in zip(pixels, body["results"], classified, strict=True):
        indices, similarities, voted = expected(tiny_artifacts / "mnist", image, 7)
        neighbours = result["neighbours"]
        assert [n["index"] for n in neighbours] == indices
        np.testing.assert_allclose([n["similarity"] for n in neighbours], similarities, atol=1e-5)
        np.testing.assert_allclose([n["distance"] for n in neighbours], 1 - np.array(similarities), atol=1e-5)
        assert all(n["label"] == i // 2 % 10 for n, i in zip(neighbours, indices, strict=True))  # as labelled
        assert all(n["class_name"] == str(n["label"]) for n in neighbours)
        assert all(n["image"] == f"/reference/mnist/{n['index']}.png?version=1" for n in neighbours)
        assert (result["label"], result["class_name"]) == (prediction["label"], prediction["class_name"])
        assert result["in_distribution"] == prediction["in_distribution"]
        assert result["vote"]["label"] == voted and result["vote"]["agrees"] == (voted == result["label"])
        assert result["vote"]["class_name"] == str(voted)
        assert result["vote"]["k"] == read_card(tiny_artifacts / "mnist").reference.vote_k  # type: ignore[union-attr]


def test_a_neighbours_image_link_shows_the_stored_reference_image(client: TestClient, tiny_artifacts: Path) -> None:
    reference = map_reference(tiny_artifacts / "mnist" / REFERENCE_FILE, 256, 10)
    neighbour = client.post("/similar?k=1", files={"file": ("d.png", png_bytes(digit_like(3)))}).json()
    link = neighbour["results"][0]["neighbours"][0]
    shown = client.get(link["image"])
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert shown.headers["x-label"] == str(link["label"]) and shown.headers["x-class-name"] == link["class_name"]
    assert "immutable" in shown.headers["cache-control"]
    pixels = np.asarray(Image.open(io.BytesIO(shown.content)))
    np.testing.assert_array_equal(pixels.reshape(-1), reference.images[reference.position(link["index"])])
    assert client.get(f"/reference/mnist/{link['index']}.png").headers["cache-control"] == "no-cache"  # unpinned


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/reference/mnist/1.png", 404, "index 1 is not in model 'mnist' version 1's reference set"),  # odd: held out
        ("/reference/mnist/-4.png", 422, "index"),
        (f"/reference/mnist/{10**30}.png", 422, "index"),
        ("/reference/mnist/999999999.png", 404, "index 999999999 is not in model 'mnist'"),
        ("/reference/mnist/x.png", 422, "index"),
        ("/reference/nope/0.png", 404, "unknown model 'nope'"),
        ("/reference/mnist/0.png?version=9", 404, "has no version 9"),
        ("/reference/mnist/0.png?version=abc", 400, "version"),
    ],
)
def test_a_reference_image_that_is_not_there_is_a_clear_refusal(
    client: TestClient, path: str, status: int, says: str
) -> None:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


@pytest.mark.parametrize("k", ["0", "101", "ten", "-1"])
def test_k_out_of_bounds_is_refused_before_any_work(client: TestClient, k: str) -> None:
    response = client.post(f"/similar?k={k}", content=digit_like(0).tobytes(), headers=RAW)
    assert response.status_code == 422 and "k" in response.json()["detail"]


def test_bad_bodies_get_the_same_refusals_as_the_other_routes(client: TestClient) -> None:
    for content, headers, status, says in [
        (b"\x89PNG not really", {"Content-Type": "image/png"}, 400, "is not an image Pillow can read"),
        (b"\x00" * 100, RAW, 422, "not a whole number of 784-byte 28x28 images"),
        (b"", RAW, 422, "request body is empty"),
        (b"A" * 100_000, {"Content-Type": "text/plain"}, 415, "Content-Type 'text/plain' is not accepted"),
    ]:
        response = client.post("/similar", content=content, headers=headers)
        assert response.status_code == status and says in response.json()["detail"], response.text
        assert len(response.text) < 600  # never the body back


def test_a_version_without_a_reference_set_says_so_and_serves_everything_else(tiny_artifacts: Path) -> None:
    (tiny_artifacts / "mnist" / REFERENCE_FILE).unlink()  # a card naming a file that was not copied
    with TestClient(create_app(make_settings(tiny_artifacts))) as client:
        refused = client.post("/similar", content=digit_like(0).tobytes(), headers=RAW)
        assert refused.status_code == 404
        assert "no reference set to search: reference.safetensors was not copied" in refused.json()["detail"]
        assert client.post("/classify", content=digit_like(0).tobytes(), headers=RAW).status_code == 200
        listed = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert listed["mnist"]["reference"] is None and listed["fashion-mnist"]["reference"]["size"] == 300
        assert client.get("/reference/mnist/0.png").status_code == 404


def test_a_tampered_reference_set_fails_its_version_with_the_reason(tiny_artifacts: Path) -> None:
    path = tiny_artifacts / "mnist" / REFERENCE_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with TestClient(create_app(make_settings(tiny_artifacts, default_model="fashion-mnist"))) as client:
        failed = {m["name"]: m for m in client.get("/models").json()["models"]}["mnist"]
        assert not failed["loaded"] and "reference.safetensors does not match its card" in failed["error"]


def test_models_show_the_embedding_and_the_reference_set(client: TestClient) -> None:
    mnist = {m["name"]: m for m in client.get("/models").json()["models"]}["mnist"]
    assert mnist["embedding"] == {"layer": 2, "dim": 256, "normalisation": "l2", "metric": "cosine"}
    assert set(mnist["reference"]) == {"split", "size", "vote_k", "vote_validation_accuracy", "vote_test_accuracy"}


def test_concurrent_requests_with_different_k_share_a_batch_and_each_gets_its_own_answer(tiny_artifacts: Path) -> None:
    images = [digit_like(seed) for seed in range(24)]

    async def run() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        app = create_app(make_settings(tiny_artifacts, batch_max_wait_ms=20))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                answers = await asyncio.gather(
                    *(
                        http.post(f"/similar?k={1 + i % 5}", content=image.tobytes(), headers=RAW)
                        for i, image in enumerate(images)
                    )
                )
                alone = [await http.post("/similar?k=5", content=image.tobytes(), headers=RAW) for image in images]
        return [a.json() for a in answers], [a.json() for a in alone]

    together, alone = asyncio.run(run())
    for i, (batched, single) in enumerate(zip(together, alone, strict=True)):
        neighbours = batched["results"][0]["neighbours"]  # type: ignore[index]
        expected = single["results"][0]["neighbours"][: 1 + i % 5]  # type: ignore[index]
        assert [n["index"] for n in neighbours] == [n["index"] for n in expected]
        # one matrix product for the batch, another for one image: the same sums in another order
        np.testing.assert_allclose(
            [n["similarity"] for n in neighbours], [n["similarity"] for n in expected], atol=1e-6
        )


def test_a_version_rolled_out_searches_its_own_reference_set(tiny_artifacts: Path, tmp_path: Path) -> None:
    """Each version's links name it, and each version's reference images are its own."""
    artifacts = tmp_path / "versioned"
    (artifacts / "mnist").mkdir(parents=True)
    shutil.copytree(tiny_artifacts / "mnist", artifacts / "mnist" / "1")
    shutil.copytree(tiny_artifacts / "fashion-mnist", artifacts / "mnist" / "2")  # another model as version 2
    with TestClient(create_app(make_settings(artifacts, version_policy=["all"]))) as client:
        for version in (1, 2):
            answer = client.post(f"/similar?version={version}", content=digit_like(5).tobytes(), headers=RAW).json()
            assert answer["model_version"] == version
            assert answer["results"][0]["neighbours"][0]["image"].endswith(f"?version={version}")


def test_a_malformed_reference_file_fails_its_version_alone(tiny_artifacts: Path) -> None:
    """A header that is not what it should be is the version's failure with the reason, not the server's."""
    import hashlib
    import json
    import struct

    from models.layout import write_card

    folder = tiny_artifacts / "mnist"
    raw = json.dumps({"columns": {"dtype": "F32", "shape": None, "data_offsets": [0, 4]}}).encode()
    data = struct.pack("<Q", len(raw)) + raw + b"\0" * 8
    (folder / REFERENCE_FILE).write_bytes(data)
    card = read_card(folder)
    assert card.reference is not None
    write_card(folder, replace(card, reference=replace(card.reference, sha256=hashlib.sha256(data).hexdigest())))
    with TestClient(create_app(make_settings(tiny_artifacts, default_model="fashion-mnist"))) as client:
        listed = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert not listed["mnist"]["loaded"] and "'columns' must be a rank-2 F32 array" in listed["mnist"]["error"]
        assert client.post("/similar", content=digit_like(0).tobytes(), headers=RAW).status_code == 200


@pytest.mark.parametrize("index", ["10.0", "+10", "%2010", "00012", "1e3"])
def test_an_image_has_one_url(client: TestClient, index: str) -> None:
    response = client.get(f"/reference/mnist/{index}.png")
    assert response.status_code == 422 and "index" in response.json()["detail"]
