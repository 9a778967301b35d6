"""Admission control on a real server: past a model's pending images, requests are refused at once (REST 503 with
Retry-After in the route's error form, gRPC UNAVAILABLE), counted in /metrics, and every request is answered."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.service.grpc.calls import TIMEOUT_S, images_input
from tests.service.grpc.servers import MAX_IMAGES, serve

pytestmark = pytest.mark.slow
IMAGES = MAX_IMAGES  # a request's (the most the servers here take), and the bound: one request pending at a time
CONCURRENT = 48
RAW = {"Content-Type": "application/octet-stream"}


def batch(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (IMAGES, 28, 28), dtype=np.uint8)


async def flood(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:
        calls = []
        for i in range(CONCURRENT):
            if i % 2:
                calls.append(client.post("/classify?model=mnist", content=batch(i).tobytes(), headers=RAW))
            else:
                tensor = {
                    "name": "images",
                    "shape": [IMAGES, 784],
                    "datatype": "UINT8",
                    "data": batch(i).ravel().tolist(),
                }
                calls.append(client.post("/v2/models/mnist/infer", json={"inputs": [tensor]}))
        return await asyncio.gather(*calls)


def refused_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT_S).text
    line = next((line for line in text.splitlines() if line.startswith('sae_queue_refusals_total{model="mnist"}')), "")
    return float(line.split()[-1]) if line else 0.0


def test_past_the_bound_rest_answers_503_with_retry_after_and_every_request_is_answered(tiny_artifacts: Path) -> None:
    with serve(tiny_artifacts, SAE_MAX_PENDING_IMAGES=str(IMAGES)) as server:
        answers = []
        for _ in range(5):  # until the flood has met a full model: requests arrive faster than forwards end
            answers += asyncio.run(flood(server.url))
            if any(a.status_code == 503 for a in answers):
                break
        statuses = {a.status_code for a in answers}
        assert statuses <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        refusals = [a for a in answers if a.status_code == 503]
        for refusal in refusals:
            assert refusal.headers["retry-after"] == "1" and refusal.headers["x-request-id"]
            on_protocol = refusal.request.url.path.startswith("/v2/")
            detail = refusal.json()["error" if on_protocol else "detail"]
            assert "'mnist' is at capacity" in detail and "try again" in detail
        assert refused_total(server.url) == len(refusals)
        # a model with room is not refused: the other model's requests are answered meanwhile
        other = httpx.post(f"{server.url}/classify?model=fashion-mnist", content=batch(0).tobytes(), headers=RAW)
        assert other.status_code == 200


def test_a_caller_without_a_key_gets_401_not_the_models_load(tiny_artifacts: Path) -> None:
    with serve(tiny_artifacts, SAE_MAX_PENDING_IMAGES=str(IMAGES), SAE_API_KEYS="secret") as server:

        async def mixed() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT_S) as client:
                keyed = {**RAW, "Authorization": "Bearer secret"}
                calls = [
                    client.post("/classify", content=batch(i).tobytes(), headers=keyed if i % 2 else RAW)
                    for i in range(CONCURRENT)
                ]
                return await asyncio.gather(*calls)

        answers: list[httpx.Response] = []
        for _ in range(5):
            answers += asyncio.run(mixed())
            if any(a.status_code == 503 for a in answers):
                break
        for answer in answers:
            keyed = answer.request.headers.get("authorization") == "Bearer secret"
            assert answer.status_code in ({200, 503} if keyed else {401}), (keyed, answer.status_code)
        assert any(a.status_code == 503 for a in answers)


def test_past_the_bound_grpc_answers_unavailable(tiny_artifacts: Path) -> None:
    with serve(tiny_artifacts, SAE_MAX_PENDING_IMAGES=str(IMAGES)) as server:
        client = triton.InferenceServerClient(server.address)

        def call(seed: int) -> str:
            try:
                client.infer("mnist", [images_input(batch(seed))], client_timeout=TIMEOUT_S)
                return "OK"
            except InferenceServerException as e:
                assert "at capacity" in e.message() or str(e.status()) != "StatusCode.UNAVAILABLE"
                return str(e.status()).removeprefix("StatusCode.")

        codes: list[str] = []
        with ThreadPoolExecutor(CONCURRENT) as pool:
            for _ in range(5):
                codes += list(pool.map(call, range(CONCURRENT)))
                if "UNAVAILABLE" in codes:
                    break
        client.close()
        assert set(codes) <= {"OK", "UNAVAILABLE"} and "OK" in codes and "UNAVAILABLE" in codes, set(codes)
        assert refused_total(server.url) == codes.count("UNAVAILABLE")
