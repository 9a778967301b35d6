"""The OpenAI embeddings API: the official `openai` SDK against a real server on a loopback port, and the refusals
a confused or hostile client gets, in OpenAI's error form."""

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from models.reference import normalised
from service.app import create_app
from tests.images import digit_like, png_bytes
from tests.servers import start_server
from tests.service.apps import make_settings


def data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.checkpoints import write_tiny_artifacts

    artifacts = write_tiny_artifacts(tmp_path_factory.mktemp("openai") / "artifacts")
    process, url = start_server(artifacts, SAE_MAX_BATCH_IMAGES="8")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def native_embeddings(url: str, pixels: np.ndarray, model: str = "mnist") -> np.ndarray:
    """/embed's code for the same images, scaled to unit length here."""
    answer = httpx.post(
        f"{url}/embed?model={model}",
        content=pixels.tobytes(),
        headers={"Content-Type": "application/octet-stream", "Accept": "application/x-npy"},
    )
    return normalised(np.load(io.BytesIO(answer.content)))


def test_the_sdk_embeds_data_urls_as_the_native_route_does(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="not-checked-here")
    pixels = np.stack([digit_like(seed) for seed in range(3)])
    response = client.embeddings.create(model="mnist", input=[data_url(p) for p in pixels])  # the SDK asks base64
    assert response.model == "mnist:1" and response.object == "list"
    assert [d.index for d in response.data] == [0, 1, 2]
    assert response.usage.prompt_tokens == response.usage.total_tokens == 3 * 784
    vectors = np.array([d.embedding for d in response.data])
    np.testing.assert_allclose(vectors, native_embeddings(server, pixels), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    as_floats = client.embeddings.create(model="mnist:1", input=data_url(pixels[0]), encoding_format="float")
    np.testing.assert_allclose(as_floats.data[0].embedding, vectors[0], atol=1e-7)


def test_the_sdk_embeds_pixel_arrays_and_bare_base64(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x")
    pixels = np.stack([digit_like(7), digit_like(8)])
    arrays = client.embeddings.create(model="fashion-mnist", input=[p.reshape(-1).tolist() for p in pixels])
    bare = client.embeddings.create(model="fashion-mnist", input=base64.b64encode(png_bytes(pixels[0])).decode())
    expected = native_embeddings(server, pixels, "fashion-mnist")
    np.testing.assert_allclose([d.embedding for d in arrays.data], expected, atol=1e-6)
    np.testing.assert_allclose(bare.data[0].embedding, expected[0], atol=1e-6)


def test_the_sdk_lists_and_retrieves_models(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x")
    ids = [m.id for m in client.models.list()]
    assert ids == ["fashion-mnist", "fashion-mnist:1", "mnist", "mnist:1"]
    assert client.models.retrieve("mnist:1").owned_by == "sae-serve"
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve("mnist:7")
    assert refused.value.code == "model_not_found" and "has no version 7" in refused.value.message


@pytest.mark.parametrize(
    ("arguments", "error", "param", "says"),
    [
        ({"model": "nope", "input": "AAAA"}, openai.NotFoundError, "model", "unknown model 'nope'"),
        ({"model": "mnist", "input": "not base64!"}, openai.BadRequestError, "input", "input 0 is not base64"),
        ({"model": "mnist", "input": [[1, 2, 3]]}, openai.BadRequestError, "input", "has 3 items; an image is 784"),
        ({"model": "mnist", "input": [[300] * 784]}, openai.BadRequestError, "input", "whole numbers 0-255"),
        ({"model": "mnist", "input": []}, openai.BadRequestError, "input", "a non-empty list of images"),
        ({"model": "mnist", "input": "AAAA", "dimensions": 64}, openai.BadRequestError, "dimensions", "must be 256"),
        ({"model": "mnist", "input": ["x"] * 9}, openai.APIStatusError, None, "9 images in one request; the limit"),
        (
            {"model": "mnist", "input": base64.b64encode(b"GIF89a" + b"\0" * 30).decode()},
            openai.BadRequestError,
            None,
            "is not an image",
        ),
    ],
)
def test_the_sdk_raises_openais_errors_with_the_field_at_fault(
    server: str, arguments: dict[str, object], error: type[openai.APIStatusError], param: str | None, says: str
) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)
    with pytest.raises(error) as refused:
        client.embeddings.create(**arguments)  # type: ignore[arg-type]
    body = refused.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
    assert says in refused.value.message and refused.value.param == param
    assert len(refused.value.message) < 400  # a short prefix of what was sent, at most


def test_with_api_keys_the_sdk_needs_its_key(tiny_artifacts: Path) -> None:
    process, url = start_server(tiny_artifacts, SAE_API_KEYS="sesame")
    try:
        with pytest.raises(openai.AuthenticationError) as refused:
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong").embeddings.create(model="mnist", input="AAAA")
        assert refused.value.code == "invalid_api_key"
        answer = openai.OpenAI(base_url=f"{url}/v1", api_key="sesame").embeddings.create(
            model="mnist", input=data_url(digit_like(0))
        )
        assert len(answer.data[0].embedding) == 256
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"\xff\xfe not json", 400, "request JSON is not valid"),
        (b"[1, 2]", 400, "request must be a JSON object"),
        (b'{"model": "mnist"}', 400, "'input' must be an image"),
        (b'{"input": "AAAA"}', 400, "'model' must be a model's name"),
        (b'{"model": "mnist", "input": "AAAA", "encoding_format": "int8"}', 400, "'encoding_format' must be"),
        (b'{"model": "mnist", "input": ["AAAA", [0]]}', 400, "all strings (base64 image files) or all arrays"),
        (b'{"model": "mnist", "input": [[[[[[[0]]]]]]]}', 400, "JSON nested deeper than 6 levels"),
        (b'{"model": "mnist", "input": "data:image/png,rawtext"}', 400, "a data URL must be data:<type>;base64"),
        (b'{"model": "mnist", "input": ""}', 400, "input 0 is empty"),
        (b'{"model": "mnist", "input": "AAAA", "resize": "yes"}', 400, "'resize' must be true or false"),
        (b'{"model": "mnist:x", "input": "AAAA"}', 400, "version"),
        (b'{"model": "mnist", "input": [[true]]}', 400, "has 1 items; an image is 784"),
    ],
)
def test_a_confused_client_gets_a_clear_openai_error(client: TestClient, body: bytes, status: int, says: str) -> None:
    response = client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] and error["type"] == "invalid_request_error", error


def test_a_huge_body_is_refused_before_it_is_read_and_quoted_back_by_no_one(client: TestClient) -> None:
    huge = b'{"model": "mnist", "input": "' + b"A" * (9 * 1024 * 1024) + b'"}'
    response = client.post("/v1/embeddings", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and len(response.text) < 400
    assert response.json()["error"]["code"] == "request_too_large"
    long_string = b'{"model": "mnist", "input": "' + b"!" * 200_000 + b'"}'
    response = client.post("/v1/embeddings", content=long_string, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and len(response.text) < 600


def test_resize_prepares_a_photo_as_classify_does(client: TestClient) -> None:
    photo = np.full((90, 60), 235, np.uint8)
    photo[20:70, 25:35] = 20  # a dark stroke on light paper
    answer = client.post("/v1/embeddings", json={"model": "mnist", "input": data_url(photo), "resize": True})
    assert answer.status_code == 200, answer.text
    unresized = client.post("/v1/embeddings", json={"model": "mnist", "input": data_url(photo)})
    assert unresized.status_code == 400 and "28x28" in unresized.json()["error"]["message"]


def test_a_blank_image_still_gets_a_unit_vector(client: TestClient) -> None:
    answer = client.post("/v1/embeddings", json={"model": "mnist", "input": [[0] * 784]}).json()
    assert abs(np.linalg.norm(answer["data"][0]["embedding"]) - 1) < 1e-6


def test_unknown_routes_under_v1_answer_in_openais_form(tiny_artifacts: Path) -> None:
    with TestClient(create_app(make_settings(tiny_artifacts))) as client:
        response = client.post("/v1/chat/completions", json={"model": "mnist", "messages": []})
        assert response.status_code in (404, 405)
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        ({"model": "mnist", "input": "AAAA", "z" * 5000: 1}, 400, "z" * 40, "unrecognised request argument"),
        ({"model": "mnist:abc", "input": "AAAA"}, 400, "model", "version"),
        ({"model": "mnist:", "input": "AAAA"}, 400, "model", "names no version after ':'"),
        ({"model": "mnist", "input": [[300] * 784]}, 400, "input", "pixels must be whole numbers 0-255"),
        ({"model": "mnist", "input": [[2**70] * 784]}, 400, "input", "pixels must be whole numbers 0-255"),
        ({"model": "mnist", "input": [0.5] * 784}, 400, "input", "pixels must be whole numbers 0-255"),
        ({"model": "mnist", "input": [True] * 784}, 400, "input", "pixels must be whole numbers 0-255"),
        ({"model": "mnist", "input": "data:text/plain;base64,AAAA"}, 400, "input", "not of an image"),
        ({"model": "mnist", "input": "AAAA", "user": {"a": 1}}, 400, "user", "'user' must be a string"),
    ],
)
def test_each_refusal_names_the_field_and_quotes_it_short(
    client: TestClient, body: dict[str, object], status: int, param: str, says: str
) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] and error["param"].startswith(param) and len(error["param"]) < 100, error
    assert len(response.text) < 600


def test_image_errors_are_400s_naming_the_input_and_the_scheme_is_case_blind(client: TestClient) -> None:
    wide = data_url(np.zeros((28, 40), np.uint8))
    refused = client.post("/v1/embeddings", json={"model": "mnist", "input": wide})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input"
    assert "28x28" in refused.json()["error"]["message"]
    upper = "DATA:IMAGE/PNG;BASE64," + data_url(digit_like(0)).split(",", 1)[1]
    assert client.post("/v1/embeddings", json={"model": "mnist", "input": upper}).status_code == 200
    plain = client.post("/v1/embeddings", content=b"{}", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415 and plain.json()["error"]["type"] == "invalid_request_error"


def test_the_json_limits_of_the_other_routes_apply(tiny_artifacts: Path) -> None:
    settings = make_settings(tiny_artifacts, max_json_bytes=10_000)
    with TestClient(create_app(settings)) as client:
        body = {"model": "mnist", "input": [[0] * 784] * 10}  # 1.6 KB an image, at the least
        response = client.post("/v1/embeddings", json=body)
        assert response.status_code == 413 and "limit of 10000 bytes" in response.json()["error"]["message"]
