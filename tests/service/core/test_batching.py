import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models import StackedAutoencoder, load_checkpoint, to_model_input
from models.ood import ReconstructionOnly
from service.core.batching import MicroBatcher, ModelBatchers
from service.core.errors import Overloaded
from service.core.forward import Operation
from service.core.repository import ServedModel
from service.core.run_torch import TorchRunner
from tests.checkpoints import make_card
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


def served_stub(name: str) -> ServedModel:
    """A served model the batchers key by name; the operations here never touch its model."""
    card = make_card(name, [str(c) for c in range(10)])
    judge = ReconstructionOnly(card.error_threshold)
    return ServedModel(name, card, TorchRunner(StackedAutoencoder(card.config), card, judge, torch.device("cpu")))


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


class Gate:
    """A forward that blocks until released, so that requests pile up behind it."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.calls = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        assert self.open.wait(timeout=30)
        return pixels.reshape(len(pixels), -1).sum(1)


def test_a_full_queue_refuses_at_once_and_every_admitted_request_is_answered() -> None:
    """One image runs and three wait (four pending, the bound); the next ones of that model are refused without
    waiting, whatever the
    operation; another model's requests still queue; the admitted ones are all answered once the forward frees."""
    gate = Gate()
    refused: list[str] = []
    batchers = ModelBatchers(max_batch_images=64, max_wait_s=0.0, max_pending_images=4, on_refusal=refused.append)
    mnist, fashion = served_stub("mnist"), served_stub("fashion-mnist")
    operations = [Operation("classify", lambda _, p: gate(p)), Operation("embed", lambda _, p: gate(p))]

    async def scenario() -> tuple[list[object], float]:
        running = asyncio.create_task(batchers.run(mnist, operations[0], images(1, 1)))
        await asyncio.sleep(0.05)  # in the forward thread, blocked
        queued = [asyncio.create_task(batchers.run(mnist, operations[i % 2], images(1, i))) for i in range(3)]
        await asyncio.sleep(0.05)
        assert batchers.pending("mnist") == 4
        started = time.monotonic()
        outcomes: list[object] = []
        for operation in operations:
            try:
                await batchers.run(mnist, operation, images(1, 9))
            except Overloaded as e:
                outcomes.append(e)
        refused_in = time.monotonic() - started
        other = asyncio.create_task(batchers.run(fashion, operations[0], images(1, 5)))  # its own queue
        await asyncio.sleep(0.05)
        gate.open.set()
        answers = await asyncio.wait_for(asyncio.gather(running, *queued, other), timeout=30)
        await batchers.close()
        return [*outcomes, *answers], refused_in

    outcomes, refused_in = asyncio.run(scenario())
    refusals = [o for o in outcomes if isinstance(o, Overloaded)]
    assert len(refusals) == 2 and refused == ["mnist", "mnist"] and refused_in < 0.5
    assert refusals[0].status_code == 503 and refusals[0].headers == {"Retry-After": "1"}
    assert "'mnist' is at capacity: 4 images already wait for it here (the bound is 4)" in refusals[0].detail
    assert [int(a[0]) for a in outcomes[2:]] == [784, 0, 784, 784 * 2, 784 * 5]  # type: ignore[index]


def test_the_bound_counts_images_and_takes_any_request_while_under_it() -> None:
    """A request larger than the bound is taken while the model is under it (none starves behind small ones); the
    next is refused once the pending images reach the bound, whatever the requests' sizes."""
    gate = Gate()
    batchers = ModelBatchers(max_batch_images=64, max_wait_s=0.0, max_pending_images=4)
    operation = Operation("classify", lambda _, p: gate(p))
    mnist = served_stub("mnist")

    async def scenario() -> tuple[int, list[bool], int]:
        large = asyncio.create_task(batchers.run(mnist, operation, images(6, 1)))  # over the bound, taken
        await asyncio.sleep(0.05)
        held = batchers.pending("mnist")
        with pytest.raises(Overloaded):
            await batchers.run(mnist, operation, images(1, 1))
        gate.open.set()
        await asyncio.wait_for(large, timeout=30)
        gate.open.clear()
        fullness = []
        tasks = []
        for _ in range(2):  # 2 images pending: under the bound; 4: at it
            tasks.append(asyncio.create_task(batchers.run(mnist, operation, images(2, 1))))
            await asyncio.sleep(0.05)
            fullness.append(batchers.full("mnist"))
        gate.open.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        await batchers.close()
        return held, fullness, batchers.pending("mnist")

    held, fullness, after = asyncio.run(scenario())
    assert held == 6 and fullness == [False, True] and after == 0


def test_no_bound_when_max_pending_images_is_0() -> None:
    gate = Gate()
    batchers = ModelBatchers(max_batch_images=64, max_wait_s=0.0, max_pending_images=0)
    operation = Operation("classify", lambda _, p: gate(p))

    async def scenario() -> list[np.ndarray]:
        tasks = [asyncio.create_task(batchers.run(served_stub("mnist"), operation, images(1, i))) for i in range(50)]
        await asyncio.sleep(0.1)
        gate.open.set()
        answers = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        await batchers.close()
        return answers

    assert len(asyncio.run(scenario())) == 50


def test_the_front_door_names_routes_as_the_router_does() -> None:
    """Its refusals are counted under the same route templates as the app's answers, for the models named."""
    from service.http.admission import route_and_model
    from service.http.rest_app import rest_app

    templates = set(rest_app_paths(rest_app))
    cases = {
        ("/classify", b""): ("/classify", "default"),
        ("/embed", b"layer=1&model=fashion-mnist"): ("/embed", "fashion-mnist"),
        ("/v2/models/mnist/infer", b""): ("/v2/models/{name}/infer", "mnist"),
        ("/v2/models/mnist/versions/2/infer", b""): ("/v2/models/{name}/versions/{version}/infer", "mnist"),
        ("/v2/models/mnist/ready", b""): None,
        ("/models", b""): None,
    }
    for (path, query), expected in cases.items():
        found = route_and_model(path, query, "default")
        assert found == expected, path
        if found is not None:
            assert found[0] in templates, found


def rest_app_paths(make: object) -> list[str]:
    """The route templates of the REST app, as its OpenAPI description names them."""
    from service.core.dataplane import DataPlane
    from tests.service.apps import make_settings

    plane = DataPlane(make_settings(Path("/nonexistent")))
    return list(make(plane, None).openapi()["paths"])  # type: ignore[operator]
