"""A real `sae-serve` process on a loopback port with the real trained checkpoints (slow; run by CI)."""

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.images import png_bytes
from tests.servers import require_trained_artifacts, start_server
from training.data import load_dataset

pytestmark = pytest.mark.slow
BATCH = 250


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    process, url = start_server(require_trained_artifacts(), SAE_LOG_LEVEL="warning", SAE_DEVICE="auto")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_png_accuracy_through_the_server_equals_the_evaluated_accuracy(server: str, name: str) -> None:
    data = load_dataset(name)
    images, labels = data.test_images.numpy(), data.test_labels.numpy()
    predicted = []
    with httpx.Client(base_url=server, timeout=60) as client:
        for start in range(0, len(images), BATCH):
            files = [
                ("file", (f"{i}.png", png_bytes(images[i]), "image/png"))
                for i in range(start, min(start + BATCH, len(images)))
            ]
            response = client.post(f"/classify?model={name}&top_k=1", files=files)
            assert response.status_code == 200, response.text
            predicted += [p["label"] for p in response.json()["predictions"]]
        card_accuracy = next(m for m in client.get("/models").json()["models"] if m["name"] == name)["metrics"][
            "test_accuracy"
        ]
    accuracy = float(np.mean(np.array(predicted) == labels))
    assert len(predicted) == 10000
    assert accuracy == card_accuracy


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_reconstruct_and_embed_real_images(server: str, name: str) -> None:
    data = load_dataset(name)
    images = data.test_images[:4].numpy()
    files = [("file", (f"{i}.png", png_bytes(p), "image/png")) for i, p in enumerate(images)]
    with httpx.Client(base_url=server, timeout=30) as client:
        rebuilt = client.post(f"/reconstruct?model={name}", files=files)
        assert rebuilt.headers["content-type"] == "image/png"
        strip = np.asarray(Image.open(io.BytesIO(rebuilt.content)), dtype=np.float64) / 255
        originals = np.concatenate(list(images), axis=1) / 255
        assert strip.shape == (28, 112)
        assert np.mean((strip - originals) ** 2) < 0.05  # trained decoders rebuild the inputs
        npy = client.post(f"/embed?model={name}", files=files, headers={"Accept": "application/x-npy"})
        codes = np.load(io.BytesIO(npy.content))
        assert codes.shape == (4, 256) and np.abs(codes).max() <= 1.0  # tanh codes
        classified = client.post(f"/classify?model={name}", files=files).json()["predictions"]
        assert sum(p["in_distribution"] for p in classified) >= 3


def test_a_digit_photo_is_classified_with_resize(server: str) -> None:
    """Real MNIST digits re-shot as 'photos': dark ink on grey paper, 8x larger, JPEG-compressed."""
    data = load_dataset("mnist")
    rng = np.random.default_rng(0)
    correct = 0
    count = 100
    with httpx.Client(base_url=server, timeout=30) as client:
        for i in range(count):
            digit = Image.fromarray(data.test_images[i].numpy()).resize((224, 224), Image.Resampling.BICUBIC)
            paper = 200 + rng.normal(0, 6, (320, 260))
            paper[40:264, 20:244] -= np.asarray(digit, dtype=np.float64) * 0.7
            photo = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).convert("RGB")
            buffer = io.BytesIO()
            photo.save(buffer, format="JPEG", quality=85)
            response = client.post(
                "/classify?resize=true", files=[("file", ("photo.jpg", buffer.getvalue(), "image/jpeg"))]
            )
            assert response.status_code == 200, response.text
            correct += response.json()["predictions"][0]["label"] == int(data.test_labels[i])
    assert correct >= 95
