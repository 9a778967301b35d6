from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.keys import key_matches, presented_key
from service.core.settings import Settings
from tests.images import digit_like, png_bytes
from tests.service.apps import make_settings

FILES = [("file", ("a.png", png_bytes(digit_like(0)), "image/png"))]


def test_api_keys_guard_everything_but_health(tiny_artifacts: Path) -> None:
    app = create_app(make_settings(tiny_artifacts, api_keys="alpha-key, beta-key", docs_public=False))
    with TestClient(app) as client:
        missing = client.post("/classify", files=FILES)
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/classify", files=FILES, headers={"X-API-Key": "alpha-kez"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
        assert client.post("/classify", files=FILES, headers={"Authorization": "Bearer beta-key"}).status_code == 200
        assert client.post("/embed", files=FILES, headers={"X-API-Key": "alpha-key"}).status_code == 200
        assert client.get("/models").status_code == 401
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/docs", headers={"X-API-Key": "alpha-key"}).status_code == 200
        assert client.get("/docs").status_code == 401
        assert client.get("/docs-assets/swagger-ui.css").status_code == 200  # public files, keys or not
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200


def test_docs_are_public_by_default_and_no_keys_means_open(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts, api_keys="k"))) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/models").status_code == 401
    with TestClient(create_app(make_settings(tiny_artifacts))) as client:
        assert client.get("/models").status_code == 200


def test_key_parsing_and_comparison() -> None:
    assert presented_key({b"authorization": b"Bearer  abc "}) == b"abc"
    assert presented_key({b"authorization": b"Basic abc"}) is None
    assert presented_key({b"x-api-key": b"xyz"}) == b"xyz"
    assert key_matches(b"two", [b"one", b"two"]) and not key_matches(b"tw", [b"one", b"two"])


def test_cors_is_off_by_default_and_follows_the_allow_list(tiny_artifacts: Path) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(make_settings(tiny_artifacts))) as client:
        response = client.options("/classify", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    settings = make_settings(tiny_artifacts, cors_origins="https://app.example", api_keys="k")
    with TestClient(create_app(settings)) as client:
        allowed = client.options("/classify", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/classify", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_comma_lists_are_parsed_once_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_API_KEYS", " alpha-key, beta-key ,,")
    monkeypatch.setenv("SAE_CORS_ORIGINS", "")
    settings = Settings()
    assert settings.api_keys == ["alpha-key", "beta-key"] and settings.cors_origins == []
