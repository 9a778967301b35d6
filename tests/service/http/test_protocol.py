"""The Open Inference Protocol codec on its own, and the v2 routes through the service's pipeline (fast)."""

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.errors import InputError, InvalidInput, TooLarge, UndecodableInput
from service.core.forward import AllOutputs
from service.core.pixels import Limits
from service.core.tensors import DEFAULT_OUTPUTS
from service.http.oip_codec import RequestedOutput, encode_infer_response, parse_infer_request
from tests.images import digit_like
from tests.service.apps import make_settings

LIMITS = Limits(1 << 20, 4, 1 << 20, 1 << 20, 6)


def tensor_body(pixels: np.ndarray, datatype: str = "UINT8", **extra: object) -> bytes:
    tensor = {"name": "images", "shape": list(pixels.shape), "datatype": datatype, "data": pixels.reshape(-1).tolist()}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def binary_body(pixels: np.ndarray, datatype: str = "UINT8") -> tuple[bytes, str]:
    blob = pixels.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": list(pixels.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "reconstruction_error"}],
        }
    ).encode()
    return head + blob, str(len(head))


def test_json_and_binary_tensors_uint8_and_fp32_give_the_same_pixels() -> None:
    pixels = np.stack([digit_like(i) for i in range(3)])
    as_json = parse_infer_request(tensor_body(pixels, id="r1"), None, LIMITS)
    body, length = binary_body(pixels)
    as_binary = parse_infer_request(body, length, LIMITS)
    as_floats = parse_infer_request(tensor_body(pixels.reshape(3, 784) / 255, "FP32"), None, LIMITS)
    for parsed in (as_json, as_binary, as_floats):
        assert parsed.pixels.dtype == np.uint8 and np.array_equal(parsed.pixels, pixels)
    assert as_json.id == "r1" and [o.name for o in as_json.outputs] == list(DEFAULT_OUTPUTS)
    assert as_binary.outputs == (RequestedOutput("label", True), RequestedOutput("reconstruction_error", False))


@pytest.mark.parametrize(
    ("body", "error", "phrase"),
    [
        (b"[1]", UndecodableInput, "JSON object"),
        (b"{", UndecodableInput, "not valid"),
        (json.dumps({"inputs": []}).encode(), UndecodableInput, "exactly one input tensor"),
        (tensor_body(np.zeros((1, 27, 28), np.uint8)), UndecodableInput, "shape [1, 27, 28] is not accepted"),
        (tensor_body(np.zeros((5, 784), np.uint8)), TooLarge, "5 images in one request; the limit is 4"),
        (tensor_body(np.full((1, 784), 300)), InvalidInput, "must lie in [0, 255] for datatype UINT8"),
        (tensor_body(np.full((1, 784), -1)), InvalidInput, "must lie in [0, 255]"),
        (tensor_body(np.full((1, 784), 0.5)), InvalidInput, "whole numbers; send datatype FP32"),
        (tensor_body(np.full((1, 784), 2.0), "FP32"), InvalidInput, "must lie in [0, 1] for datatype FP32"),
        (
            json.dumps(
                {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": ["0"] * 784}]}
            ).encode(),
            InvalidInput,
            "pixels must be numbers",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": [True] * 784}]}
            ).encode(),
            InvalidInput,
            "pixels must be numbers",
        ),
        (tensor_body(np.zeros((1, 784), np.uint8), outputs=[{"name": "logits"}]), UndecodableInput, "outputs must"),
    ],
    ids=[
        "not an object",
        "broken JSON",
        "no input",
        "wrong shape",
        "too many images",
        "over 255",
        "negative",
        "fractional UINT8",
        "FP32 over 1",
        "strings",
        "booleans",
        "unknown output",
    ],
)
def test_bad_requests_are_refused_with_the_native_error_classes(
    body: bytes, error: type[InputError], phrase: str
) -> None:
    with pytest.raises(error) as caught:
        parse_infer_request(body, None, LIMITS)
    assert type(caught.value) is error and phrase in caught.value.detail


def test_a_binary_answer_splits_into_its_json_header_and_blobs() -> None:
    pixels = np.stack([digit_like(i) for i in range(2)])
    body, length = binary_body(pixels)
    request = parse_infer_request(body, length, LIMITS)
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)
    result = AllOutputs(
        probabilities,
        np.zeros((2, 4), np.float32),
        np.zeros((2, 784), np.float32),
        np.ones(2, np.float32),
        np.log(probabilities),
        np.ones(2, np.float32),
        np.array([True, False]),
    )
    content, header_length = encode_infer_response("mnist", "1", result, request)
    assert header_length is not None
    head = orjson.loads(content[:header_length])
    label, error = head["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}
    assert np.frombuffer(content[header_length:], np.int64).tolist() == [1, 0]
    assert error["data"] == [1.0, 1.0] and head["model_name"] == "mnist"


@pytest.fixture
def v2_client(tiny_artifacts: Path) -> TestClient:
    return TestClient(create_app(make_settings(tiny_artifacts, max_batch_images=4, metrics_public=True)))


def test_v2_inference_goes_through_the_micro_batcher_and_equals_classify(v2_client: TestClient) -> None:
    pixels = np.stack([digit_like(i) for i in range(3)])
    with v2_client as client:
        answer = client.post("/v2/models/mnist/infer", content=tensor_body(pixels)).json()
        native = client.post(
            "/classify", content=pixels.tobytes(), headers={"Content-Type": "application/octet-stream"}
        ).json()["predictions"]
        metrics = client.get("/metrics").text
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"]["data"] == [p["label"] for p in native]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(3, 10)
    assert np.allclose(probabilities, [list(p["probabilities"].values()) for p in native], atol=1e-6)
    assert 'sae_batch_images_count{model="mnist",operation="infer"} 1.0' in metrics
    assert 'sae_requests_total{model="mnist",route="/v2/models/{name}/infer",status="200"} 1.0' in metrics


def test_v2_errors_take_the_protocol_form_and_the_native_statuses(v2_client: TestClient) -> None:
    with v2_client as client:
        too_many = client.post("/v2/models/mnist/infer", content=tensor_body(np.zeros((5, 784), np.uint8)))
        unknown = client.post("/v2/models/cifar/infer", content=tensor_body(np.zeros((1, 784), np.uint8)))
        no_route = client.get("/v2/nothing/here")
        native_unknown = client.post("/classify?model=cifar", content=bytes(784))
    assert too_many.status_code == 413 and "the limit is 4" in too_many.json()["error"]
    assert unknown.status_code == 404 and "unknown model 'cifar'" in unknown.json()["error"]
    assert no_route.status_code == 404 and "no route" in no_route.json()["error"]
    assert native_unknown.status_code == 404 and "unknown model" in native_unknown.json()["detail"]


def test_v2_inference_is_refused_once_the_request_timeout_passes(tiny_artifacts: Path) -> None:
    app = create_app(make_settings(tiny_artifacts, request_timeout_s=0.05))

    def slow_body():  # type: ignore[no-untyped-def]
        import time

        body = tensor_body(np.zeros((1, 784), np.uint8))
        yield body[:10]
        time.sleep(0.3)
        yield body[10:]

    with TestClient(app) as client:
        response = client.post("/v2/models/mnist/infer", content=slow_body())
    assert response.status_code == 408 and "SAE_REQUEST_TIMEOUT_S" in response.json()["error"]
