import json
import logging
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.workers.logs import JsonFormatter
from tests.images import digit_like, png_bytes
from tests.service.apps import make_settings

FILES = [("file", ("a.png", png_bytes(digit_like(0)), "image/png"))]


def metric_lines(client: TestClient, prefix: str) -> list[str]:
    text = client.get("/metrics").text
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_metrics_count_requests_batches_models_and_memory(client: TestClient) -> None:
    for _ in range(3):
        client.post("/classify", files=FILES)
    client.post("/embed?model=fashion-mnist", files=FILES)
    client.post("/classify?model=../../etc/passwd", files=FILES)
    client.get("/no/such/path")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'sae_requests_total{model="mnist",route="/classify",status="200"} 3.0' in response.text
    assert 'sae_requests_total{model="fashion-mnist",route="/embed",status="200"} 1.0' in response.text
    assert (
        'sae_requests_total{model="-",route="/classify",status="404"} 1.0' in response.text
    )  # raw names never become labels
    assert 'sae_requests_total{model="-",route="unmatched",status="404"} 1.0' in response.text
    assert 'sae_batch_images_count{model="mnist",operation="classify"} 3.0' in response.text
    assert 'sae_batch_queue_wait_seconds_count{model="fashion-mnist",operation="embed"} 1.0' in response.text
    assert 'sae_batch_compute_seconds_count{model="mnist",operation="classify"} 3.0' in response.text
    assert 'sae_model_loaded{device="cpu",model="mnist"} 1.0' in response.text
    assert metric_lines(client, 'sae_request_duration_seconds_bucket{le="0.001",route="/classify"}')
    assert float(metric_lines(client, "process_resident_memory_bytes")[0].split()[1]) > 50e6


def test_metrics_are_behind_the_key_unless_made_public(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, api_keys="k"))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "k"}).status_code == 200
    with TestClient(create_app(make_settings(tiny_artifacts, api_keys="k", metrics_public=True))) as client:
        assert client.get("/metrics").status_code == 200


def test_one_json_log_line_per_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sae_serve.access")
    client.post("/classify?model=fashion-mnist", files=FILES, headers={"X-Request-ID": "trace-7"})
    (record,) = [r for r in caplog.records if r.name == "sae_serve.access"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-7" and line["route"] == "/classify" and line["model"] == "fashion-mnist"
    assert line["status"] == 200 and line["method"] == "POST" and line["batch_images"] == 1
    assert line["duration_ms"] > 0 and line["level"] == "info" and line["logger"] == "sae_serve.access"


def server_timing(response: httpx.Response) -> dict[str, str]:
    """Server-Timing metrics by name: the duration in ms, or the description."""
    entries = {}
    for part in response.headers["server-timing"].split(","):
        name, _, params = part.strip().partition(";")
        key, _, value = params.partition("=")
        entries[name] = value.strip('"')
        assert key in ("dur", "desc"), part
    return entries


def test_inference_answers_say_where_their_time_went(client: TestClient) -> None:
    classified = client.post("/classify", files=FILES)
    raw = np.stack([digit_like(i) for i in range(3)]).tobytes()
    embedded = client.post("/embed", content=raw, headers={"Content-Type": "application/octet-stream"})
    tensor = {"name": "images", "shape": [2, 784], "datatype": "UINT8", "data": [0] * 1568}
    inferred = client.post("/v2/models/mnist/infer", json={"inputs": [tensor]})
    for response, images in ((classified, 1), (embedded, 3), (inferred, 2)):
        timing = server_timing(response)
        assert set(timing) == {"decode", "queue", "forward", "batch"}, timing
        assert float(timing["forward"]) > 0 and float(timing["decode"]) >= 0 and float(timing["queue"]) >= 0
        assert timing["batch"] == f"{images} images"
    assert "server-timing" not in client.get("/models").headers  # no model ran
    assert "server-timing" not in client.post("/classify?model=cifar", content=raw).headers
