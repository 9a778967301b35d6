"""What a real server's native REST routes answer for images, to compare the other protocols' answers with."""

import httpx
import numpy as np

from tests.images import png_bytes


def native(url: str, images: np.ndarray, model: str) -> tuple[np.ndarray, list[int], np.ndarray]:
    files = [("file", (f"{i}.png", png_bytes(p), "image/png")) for i, p in enumerate(images)]
    classified = httpx.post(f"{url}/classify?model={model}", files=files).json()["predictions"]
    embedded = httpx.post(f"{url}/embed?model={model}", files=files).json()["embeddings"]
    probabilities = np.array([list(p["probabilities"].values()) for p in classified])
    return probabilities, [p["label"] for p in classified], np.array(embedded)
