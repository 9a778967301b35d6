import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from models import SAEConfig, StackedAutoencoder, save_checkpoint
from service.app import create_app
from service.core.forward import CLASSIFY
from tests.checkpoints import make_card
from tests.images import digit_like, png_bytes
from tests.service.apps import make_settings

FILES = [("file", ("a.png", png_bytes(digit_like(0)), "image/png"))]
KEY = {"X-API-Key": "admin"}


def sha(client: TestClient, name: str) -> str:
    models = client.get("/models", headers=KEY).json()["models"]
    return str(next(m for m in models if m["name"] == name)["weights_sha256"])


def test_reload_needs_api_keys(client: TestClient) -> None:
    response = client.post("/admin/reload")
    assert response.status_code == 403 and "set SAE_API_KEYS" in response.json()["detail"]


def test_reload_swaps_models_while_requests_keep_succeeding(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, api_keys="admin"))) as client:
        before = sha(client, "mnist")
        torch.manual_seed(123)
        save_checkpoint(
            StackedAutoencoder(SAEConfig()), make_card("mnist", [str(d) for d in range(10)]), tiny_artifacts / "mnist"
        )

        def classify(_: int) -> int:
            return client.post("/classify", files=FILES, headers=KEY).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = pool.map(classify, range(200))
            reloads = [client.post("/admin/reload", headers=KEY).json() for _ in range(5)]
            assert set(statuses) == {200}
        assert all(r["swapped"] and r["loaded"] == ["fashion-mnist", "mnist"] for r in reloads)
        assert sha(client, "mnist") != before


def test_a_reload_that_loads_nothing_keeps_the_old_models(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, api_keys="admin"))) as client:
        shutil.rmtree(tiny_artifacts / "mnist")
        (tiny_artifacts / "fashion-mnist" / "card.json").write_text(json.dumps({"broken": True}))
        result = client.post("/admin/reload", headers=KEY).json()
        assert result["swapped"] is False and result["loaded"] == []
        assert client.post("/classify", files=FILES, headers=KEY).status_code == 200


def test_request_timeout_is_a_408_that_says_which_setting(
    tiny_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = CLASSIFY.forward

    def slow(*args: object) -> object:
        time.sleep(0.5)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(CLASSIFY, "forward", slow)
    with TestClient(create_app(make_settings(tiny_artifacts, request_timeout_s=0.1))) as client:
        response = client.post("/classify", files=FILES)
        assert response.status_code == 408 and "SAE_REQUEST_TIMEOUT_S" in response.json()["detail"]
        monkeypatch.setattr(CLASSIFY, "forward", real)
