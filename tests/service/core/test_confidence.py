"""Calibrated probabilities (the card's temperature) and abstaining under `min_confidence`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models import load_checkpoint, to_model_input
from service.app import create_app
from tests.images import digit_like
from tests.service.apps import make_settings

DIGITS = np.stack([digit_like(seed) for seed in range(6)])
RAW = {"Content-Type": "application/octet-stream"}


def calibrate(artifacts: Path, threshold: float) -> Path:
    """A format 3 card (no fitted out-of-distribution score): flagged above `threshold` of reconstruction error."""
    card_path = artifacts / "mnist" / "card.json"
    card = json.loads(card_path.read_text())
    card["format_version"] = 3
    card["calibration"] = {
        "temperature": 2.5,
        "validation_examples": 5000,
        "in_distribution_threshold": threshold,
        "test_ece_before": 0.03,
        "test_ece_after": 0.01,
        "test_nll_before": 0.2,
        "test_nll_after": 0.15,
    }
    card_path.write_text(json.dumps(card))
    return artifacts


@pytest.fixture
def calibrated(tiny_artifacts: Path) -> Path:
    return calibrate(tiny_artifacts, 0.07)


@pytest.fixture
def calibrated_in(tiny_artifacts: Path) -> Path:
    """Every image in distribution: abstaining then follows the probabilities alone."""
    return calibrate(tiny_artifacts, 1.0)


def logits(artifacts: Path) -> torch.Tensor:
    model = load_checkpoint(artifacts / "mnist").model
    with torch.inference_mode():
        return model.classify(to_model_input(torch.from_numpy(DIGITS)))


def classify(client: TestClient, query: str = "") -> list[dict[str, object]]:
    response = client.post(f"/classify?top_k=1{query}", content=DIGITS.tobytes(), headers=RAW)
    assert response.status_code == 200, response.text
    predictions: list[dict[str, object]] = response.json()["predictions"]
    return predictions


def probabilities(predictions: list[dict[str, object]]) -> np.ndarray:
    return np.array([list(p["probabilities"].values()) for p in predictions])  # type: ignore[attr-defined]


def test_the_cards_temperature_calibrates_every_route_and_the_threshold_is_the_cards(calibrated: Path) -> None:
    expected = (logits(calibrated) / 2.5).softmax(1).numpy()
    with TestClient(create_app(make_settings(calibrated))) as client:
        predictions = classify(client)
        np.testing.assert_allclose(probabilities(predictions), expected, atol=1e-5)
        assert [p["in_distribution"] for p in predictions] == [
            p["reconstruction_error"] <= 0.07  # type: ignore[operator]
            for p in predictions
        ]
        tensor = {"name": "images", "shape": [6, 784], "datatype": "UINT8", "data": DIGITS.ravel().tolist()}
        answer = client.post(
            "/v2/models/mnist/infer", json={"inputs": [tensor], "outputs": [{"name": "probabilities"}]}
        )
        np.testing.assert_allclose(np.array(answer.json()["outputs"][0]["data"]).reshape(6, 10), expected, atol=1e-5)
        model = next(m for m in client.get("/models").json()["models"] if m["name"] == "mnist")
        assert model["metrics"]["calibration"]["temperature"] == 2.5
        assert model["metrics"]["calibration"]["test_ece_after"] == 0.01
        assert model["in_distribution_threshold"] == 0.07


def test_a_card_without_calibration_serves_the_plain_softmax(tiny_artifacts: Path) -> None:
    expected = logits(tiny_artifacts).exp().numpy()
    with TestClient(create_app(make_settings(tiny_artifacts))) as client:
        np.testing.assert_allclose(probabilities(classify(client)), expected, atol=1e-5)


def test_min_confidence_abstains_exactly_below_the_threshold(calibrated_in: Path) -> None:
    with TestClient(create_app(make_settings(calibrated_in))) as client:
        plain = classify(client)
        assert all(p["abstained"] is False for p in plain)
        tops = [max(p["probabilities"].values()) for p in plain]  # type: ignore[attr-defined]
        threshold = sorted(tops)[3]  # three images under it, three at or over it
        answered = classify(client, f"&min_confidence={threshold!r}")
        assert [p["abstained"] for p in answered] == [top < threshold for top in tops]
        assert sum(p["abstained"] for p in answered) == 3  # type: ignore[misc]
        assert [p["label"] for p in answered] == [p["label"] for p in plain]  # the label is still given
        for bad in ("-0.1", "1.5", "high"):
            response = client.post(f"/classify?min_confidence={bad}", content=DIGITS.tobytes(), headers=RAW)
            assert response.status_code == 422 and "min_confidence" in response.text


def test_the_protocols_min_confidence_parameter_adds_abstained(calibrated_in: Path) -> None:
    tops = (logits(calibrated_in) / 2.5).softmax(1).max(1).values.numpy()
    threshold = float(np.sort(tops)[3])
    tensor = {"name": "images", "shape": [6, 784], "datatype": "UINT8", "data": DIGITS.ravel().tolist()}
    with TestClient(create_app(make_settings(calibrated_in))) as client:
        plain = client.post("/v2/models/mnist/infer", json={"inputs": [tensor]}).json()
        assert "abstained" not in [o["name"] for o in plain["outputs"]]  # only asked for, or with the parameter
        answer = client.post(
            "/v2/models/mnist/infer", json={"inputs": [tensor], "parameters": {"min_confidence": threshold}}
        ).json()
        abstained = next(o for o in answer["outputs"] if o["name"] == "abstained")
        assert abstained["datatype"] == "BOOL" and abstained["shape"] == [6]
        assert abstained["data"] == [bool(top < threshold) for top in tops] and sum(abstained["data"]) == 3
        binary = client.post(
            "/v2/models/mnist/infer",
            json={
                "inputs": [tensor],
                "parameters": {"min_confidence": "0.99"},
                "outputs": [{"name": "abstained", "parameters": {"binary_data": True}}],
            },
        )
        head_length = int(binary.headers["inference-header-content-length"])
        flags = np.frombuffer(binary.content[head_length:], dtype=np.bool_)
        assert flags.tolist() == [bool(top < 0.99) for top in tops]
        for bad in (1.5, -1, "most", True, None):
            body = {"inputs": [tensor], "parameters": {"min_confidence": bad}}
            if bad is None:
                body = {"inputs": [tensor], "parameters": "min_confidence=0.5"}
            response = client.post("/v2/models/mnist/infer", json=body)
            assert response.status_code == 400 and "min_confidence" in response.json()["error"], bad


def test_any_min_confidence_abstains_on_images_flagged_out_of_distribution(tiny_artifacts: Path) -> None:
    """A consumer refuses flagged images in one step: min_confidence above 0, over REST and the protocol."""
    flagged = calibrate(tiny_artifacts, 0.0)  # every image's reconstruction error is above 0: all flagged
    tensor = {"name": "images", "shape": [6, 784], "datatype": "UINT8", "data": DIGITS.ravel().tolist()}
    with TestClient(create_app(make_settings(flagged))) as client:
        plain = classify(client)
        assert [p["in_distribution"] for p in plain] == [False] * 6 and not any(p["abstained"] for p in plain)
        assert all(p["ood_score"] == p["reconstruction_error"] for p in plain)  # a card without a fitted score
        assert all(p["abstained"] for p in classify(client, "&min_confidence=0.000001"))
        answer = client.post(
            "/v2/models/mnist/infer", json={"inputs": [tensor], "parameters": {"min_confidence": 1e-6}}
        ).json()
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        assert outputs["in_distribution"] == [False] * 6 and outputs["abstained"] == [True] * 6
        answer = client.post(
            "/v2/models/mnist/infer", json={"inputs": [tensor], "parameters": {"min_confidence": 0}}
        ).json()
        assert next(o for o in answer["outputs"] if o["name"] == "abstained")["data"] == [False] * 6


def test_labels_follow_the_logits_when_a_high_temperature_ties_the_probabilities(tiny_artifacts: Path) -> None:
    """An untrained model's logits lie close together; divided by a large temperature, float32 probabilities can
    tie where the logits do not. The label and the top-k order are the logits' all the same (as the card's
    accuracy counts them)."""
    card_path = tiny_artifacts / "mnist" / "card.json"
    card = json.loads(card_path.read_text())
    card["format_version"] = 3
    card["calibration"] = {
        "temperature": 1e7,
        "validation_examples": 100,
        "in_distribution_threshold": 0.07,
        "test_ece_before": 0.5,
        "test_ece_after": 0.5,
        "test_nll_before": 2.3,
        "test_nll_after": 2.3,
    }
    card_path.write_text(json.dumps(card))
    pixels = np.stack([digit_like(seed) for seed in range(64)])
    model = load_checkpoint(tiny_artifacts / "mnist").model
    with torch.inference_mode():
        raw = model.classify(to_model_input(torch.from_numpy(pixels)))
    tied = (raw / 1e7).softmax(1).numpy()
    assert (tied.argmax(1) != raw.argmax(1).numpy()).any()  # the case this test is about does happen
    tensor = {"name": "images", "shape": [64, 784], "datatype": "UINT8", "data": pixels.ravel().tolist()}
    with TestClient(create_app(make_settings(tiny_artifacts))) as client:
        answer = client.post("/classify?top_k=3", content=pixels.tobytes(), headers=RAW).json()
        assert [p["label"] for p in answer["predictions"]] == raw.argmax(1).tolist()
        assert [[t["label"] for t in p["top_k"]] for p in answer["predictions"]] == raw.topk(3).indices.tolist()
        v2 = client.post("/v2/models/mnist/infer", json={"inputs": [tensor], "outputs": [{"name": "label"}]}).json()
        assert v2["outputs"][0]["data"] == raw.argmax(1).tolist()
