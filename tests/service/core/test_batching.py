import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models import load_checkpoint, to_model_input
from service.core.batching import MicroBatcher
from tests.images import digit_like, png_bytes


@dataclass
class Doubled:
    values: np.ndarray
    sums: np.ndarray


class Recorder:
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def __call__(self, pixels: np.ndarray) -> Doubled:
        self.batch_sizes.append(len(pixels))
        return Doubled(pixels.astype(np.int64) * 2, pixels.reshape(len(pixels), -1).sum(1))


def images(count: int, fill: int) -> np.ndarray:
    return np.full((count, 28, 28), fill, np.uint8)


def test_concurrent_requests_share_forwards_and_get_their_own_rows() -> None:
    forward = Recorder()

    async def scenario() -> list[Doubled]:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(forward, executor, max_batch_images=8, max_wait_s=0.05)
            results = await asyncio.gather(*(batcher.submit(images(1 + i % 3, i)) for i in range(20)))
            await asyncio.sleep(0)
            idle = [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()]
            assert idle == []  # no idle worker is left behind
            await batcher.close()
            return results

    results = asyncio.run(scenario())
    for i, result in enumerate(results):
        count = 1 + i % 3
        assert np.array_equal(result.values, images(count, i).astype(np.int64) * 2)
        assert result.sums.tolist() == [784 * i] * count
    assert sum(forward.batch_sizes) == sum(1 + i % 3 for i in range(20))
    assert max(forward.batch_sizes) <= 8 and len(forward.batch_sizes) < 20


def test_a_lone_request_does_not_wait_for_the_batch_delay() -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(Recorder(), executor, max_batch_images=64, max_wait_s=60.0)
            await asyncio.wait_for(batcher.submit(images(1, 3)), timeout=10)  # far below the 60 s delay
            await batcher.close()

    asyncio.run(scenario())


def test_a_failing_forward_fails_its_batch_and_the_next_one_runs() -> None:
    calls = []

    def flaky(pixels: np.ndarray) -> np.ndarray:
        calls.append(len(pixels))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return pixels

    async def scenario() -> np.ndarray:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(flaky, executor, max_batch_images=64, max_wait_s=0.0)
            with pytest.raises(RuntimeError, match="boom"):
                await batcher.submit(images(2, 1))
            result = await batcher.submit(images(1, 9))
            await batcher.close()
            return result

    assert asyncio.run(scenario()).max() == 9


def batch_histogram(client: TestClient) -> tuple[float, float]:
    """Forward passes and images through them for mnist's /classify, from the service's own /metrics."""
    lines = client.get("/metrics").text.splitlines()

    def value(name: str) -> float:
        wanted = f'{name}{{model="mnist",operation="classify"}}'
        return next(float(line.split()[-1]) for line in lines if line.startswith(wanted))

    return value("sae_batch_images_count"), value("sae_batch_images_sum")


def test_concurrent_http_requests_through_the_batcher_match_the_unbatched_model(
    client: TestClient, tiny_artifacts: Path
) -> None:
    pictures = [digit_like(100 + i) for i in range(48)]
    model = load_checkpoint(tiny_artifacts / "mnist").model
    with torch.inference_mode():
        expected = model.classify(to_model_input(torch.from_numpy(np.stack(pictures)))).exp().numpy()

    def post(i: int) -> tuple[int, list[float]]:
        response = client.post("/classify?top_k=1", files=[("file", (f"{i}.png", png_bytes(pictures[i]), "image/png"))])
        assert response.status_code == 200, response.text
        return i, list(response.json()["predictions"][0]["probabilities"].values())

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(len(pictures))))
    for i, probabilities in answers:
        assert np.allclose(probabilities, expected[i], atol=1e-6), i
    forwards, batched_images = batch_histogram(client)
    assert batched_images == len(pictures)
    assert forwards < len(pictures)  # requests really were batched
