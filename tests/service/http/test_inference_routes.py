import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from models import load_checkpoint, to_model_input
from tests.images import digit_like, png_bytes


def files(*images: np.ndarray) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"img{i}.png", png_bytes(p), "image/png")) for i, p in enumerate(images)]


def expected_probabilities(checkpoint: Path, pixels: np.ndarray) -> np.ndarray:
    """What the model in the checkpoint answers by itself, with no service in between."""
    model = load_checkpoint(checkpoint).model
    with torch.inference_mode():
        return model.classify(to_model_input(torch.from_numpy(pixels[None]))).exp()[0].numpy()


def test_classify_one_png(client: TestClient, tiny_artifacts: Path) -> None:
    pixels = digit_like(0)
    response = client.post("/classify", files=files(pixels))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "mnist"
    (prediction,) = body["predictions"]
    probabilities = prediction["probabilities"]
    assert list(probabilities) == [str(d) for d in range(10)]
    assert np.allclose(
        list(probabilities.values()), expected_probabilities(tiny_artifacts / "mnist", pixels), atol=1e-6
    )
    assert prediction["label"] == int(np.argmax(list(probabilities.values())))
    assert prediction["class_name"] == str(prediction["label"])
    assert [t["probability"] for t in prediction["top_k"]] == sorted(probabilities.values(), reverse=True)[:3]
    assert prediction["in_distribution"] == (prediction["reconstruction_error"] <= 0.08)


def test_batch_answers_keep_input_order_and_match_single_answers(client: TestClient) -> None:
    images = [digit_like(i) for i in range(5)]
    batch = client.post("/classify?model=fashion-mnist&top_k=10", files=files(*images)).json()["predictions"]
    assert len(batch) == 5
    for pixels, answer in zip(images, batch, strict=True):
        single = client.post("/classify?model=fashion-mnist&top_k=10", files=files(pixels)).json()["predictions"][0]
        assert answer["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)
        assert list(answer["probabilities"]) == [f"c{d}" for d in range(10)]
        assert len(answer["top_k"]) == 10


def test_json_uint8_float_and_flat_arrays_give_the_png_answer(client: TestClient) -> None:
    pixels = digit_like(3)
    reference = client.post("/classify", files=files(pixels)).json()["predictions"][0]["probabilities"]
    bodies = [
        {"images": [pixels.tolist()]},
        {"images": [pixels.reshape(-1).tolist()], "dtype": "uint8"},
        {"images": [(pixels / 255.0).tolist()], "dtype": "float"},
    ]
    for body in bodies:
        response = client.post("/classify", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["probabilities"] == pytest.approx(reference, abs=1e-6)


def test_colour_and_alpha_are_converted_the_documented_way(client: TestClient) -> None:
    pixels = digit_like(4)
    gray = client.post("/classify", files=files(pixels)).json()["predictions"][0]
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = pixels[..., None]
    rgba[..., 3] = np.where(pixels > 0, 255, 0)  # transparent background composites to black
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    answer = client.post("/classify", files=[("file", ("a.png", buffer.getvalue(), "image/png"))]).json()
    assert answer["predictions"][0]["probabilities"] == pytest.approx(gray["probabilities"], abs=1e-6)


def test_reconstruct_answers_png_by_default_and_json_on_request(client: TestClient) -> None:
    images = [digit_like(5), digit_like(6)]
    one = client.post("/reconstruct", files=files(images[0]))
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(one.content)).size == (28, 28)
    error = float(one.headers["x-reconstruction-error"])
    strip = client.post("/reconstruct", files=files(*images))
    assert Image.open(io.BytesIO(strip.content)).size == (56, 28)
    assert strip.headers["x-image-count"] == "2"
    errors = [float(e) for e in strip.headers["x-reconstruction-error"].split(",")]
    assert errors[0] == pytest.approx(error, rel=1e-5)
    as_json = client.post("/reconstruct", files=files(*images), headers={"Accept": "application/json"}).json()
    first = np.array(as_json["reconstructions"][0]["pixels"], dtype=np.uint8)
    assert first.shape == (28, 28)
    assert np.array_equal(first, np.asarray(Image.open(io.BytesIO(strip.content)))[:, :28])
    assert as_json["reconstructions"][1]["reconstruction_error"] == pytest.approx(errors[1], rel=1e-5)


def test_embed_answers_json_and_npy(client: TestClient) -> None:
    images = [digit_like(7), digit_like(8), digit_like(9)]
    body = client.post("/embed", files=files(*images)).json()
    assert body["layer"] == 2 and body["dimension"] == 256 and len(body["embeddings"]) == 3
    npy = client.post("/embed", files=files(*images), headers={"Accept": "application/x-npy"})
    assert npy.headers["content-type"] == "application/x-npy"
    array = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert array.dtype == np.float32 and array.shape == (3, 256)
    assert np.allclose(array, np.array(body["embeddings"]), atol=1e-6)
    first_layer = client.post("/embed?layer=1", files=files(*images)).json()
    assert first_layer["dimension"] == 400


def test_resize_accepts_any_size_and_without_it_the_size_is_named(client: TestClient) -> None:
    big = np.full((120, 90), 255, np.uint8)
    big[30:90, 40:50] = 0  # a dark stroke on white paper
    refused = client.post("/classify", files=files(big))
    assert refused.status_code == 422
    assert "90x120 pixels; the models take 28x28" in refused.json()["detail"]
    assert "resize=true" in refused.json()["detail"]
    assert client.post("/classify?resize=true", files=files(big)).status_code == 200


def test_raw_image_and_octet_stream_bodies_give_the_multipart_answer(client: TestClient) -> None:
    pictures = [digit_like(20), digit_like(21)]
    reference = [p["probabilities"] for p in client.post("/classify", files=files(*pictures)).json()["predictions"]]
    raw_png = client.post("/classify", content=png_bytes(pictures[0]), headers={"Content-Type": "image/png"})
    assert raw_png.json()["predictions"][0]["probabilities"] == pytest.approx(reference[0], abs=1e-6)
    octets = np.stack(pictures).tobytes()
    raw = client.post("/classify", content=octets, headers={"Content-Type": "application/octet-stream"})
    assert [p["probabilities"] for p in raw.json()["predictions"]] == [pytest.approx(r, abs=1e-6) for r in reference]
    refused = client.post("/embed", content=octets[:-1], headers={"Content-Type": "application/octet-stream"})
    assert refused.status_code == 422
    assert "1567 bytes is not a whole number of 784-byte 28x28 images" in refused.json()["detail"]
