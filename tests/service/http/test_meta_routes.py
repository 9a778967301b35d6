import re

from fastapi.testclient import TestClient


def test_models_lists_cards_facts(client: TestClient) -> None:
    body = client.get("/models").json()
    assert body["default_model"] == "mnist"
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {"mnist", "fashion-mnist"}
    mnist = models["mnist"]
    assert mnist["loaded"] and mnist["device"] == "cpu"
    assert mnist["architecture"]["hidden_dims"] == [400, 256]
    assert mnist["metrics"]["test_accuracy"] == 0.5
    assert mnist["in_distribution_threshold"] == 0.08
    assert len(mnist["weights_sha256"]) == 64
    assert models["fashion-mnist"]["class_names"][0] == "c0"


def test_health_probes(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").json() == {"status": "ready", "models": ["fashion-mnist", "mnist"], "failed": {}}


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/health/live", headers={"X-Request-ID": "req-42"}).headers["x-request-id"] == "req-42"
    assert len(client.get("/health/live").headers["x-request-id"]) == 32


def test_docs_show_an_example_for_each_endpoint(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/classify", "/reconstruct", "/embed"):
        body = spec["paths"][path]["post"]["requestBody"]
        content = body["content"]
        assert "multipart/form-data" in content
        command = (
            f"curl -F file=@docs/samples/digit-7.png -F file=@docs/samples/digit-2.png http://127.0.0.1:8000{path}"
        )
        assert f"`{command}`" in body["description"]
        assert len(content["application/json"]["example"]["images"][0]) == 28
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        example = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
        assert example["inputs"][0]["shape"] == [1, 784], path


def test_unknown_route_says_where_to_look(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and "see /docs" in response.json()["detail"]


def test_docs_pages_load_their_scripts_from_the_service_itself(client: TestClient) -> None:
    for page, assets in (
        ("/docs", ["/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"]),
        ("/redoc", ["/docs-assets/redoc.standalone.js"]),
    ):
        html = client.get(page).text
        external = re.findall(r"""(?:src|href)=["']?(https?://[^"' >]+)""", html)
        assert external == [], external
        for asset in assets:
            assert f'"{asset}"' in html or f"'{asset}'" in html or f"={asset}" in html, (page, asset)
            response = client.get(asset)
            assert response.status_code == 200 and len(response.content) > 100_000, asset
