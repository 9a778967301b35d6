"""A model of a data set the code has never heard of, trained and served with no code change (fast)."""

from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from models import Framing
from service.app import create_app
from tests.service.apps import make_settings
from training.data import Dataset
from training.recipes import recipe_for
from training.train import train

CLASSES = ("circle", "square", "cross")
FRAMING = Framing(box=24, centre_by_mass=False)


def shapes(count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three learnable classes: a bright band at a class's own rows."""
    labels = rng.integers(0, len(CLASSES), count)
    images = rng.integers(0, 30, (count, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 4 + 8 * label : 8 + 8 * label, 4:24] = 255
    return torch.from_numpy(images), torch.from_numpy(labels).long()


def test_a_checkpoint_of_a_third_data_set_is_served_with_its_own_classes_and_framing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (train_images, train_labels), (test_images, test_labels) = shapes(512, rng), shapes(64, rng)
    data = Dataset("shapes", CLASSES, FRAMING, train_images, train_labels, test_images, test_labels, md5={})
    result = train(data, "greedy", recipe_for("default", "mnist"), 0, torch.device("cpu"), 3, 1)
    result.save(tmp_path / "artifacts" / "shapes")

    app = create_app(make_settings(tmp_path / "artifacts", default_model="shapes"))
    with TestClient(app) as client:
        listed = client.get("/models").json()["models"]
        answer = client.post(
            "/classify", content=test_images[:8].numpy().tobytes(), headers={"Content-Type": "application/octet-stream"}
        )
        photo = np.full((60, 40), 230, np.uint8)
        photo[10:20, 5:35] = 10  # dark ink on light paper: resize=true prepares it with the card's framing
        resized = client.post("/classify?resize=true", json={"images": [photo.tolist()]})
        v2 = client.get("/v2/models/shapes").json()
    assert [m["name"] for m in listed] == ["shapes"] and listed[0]["class_names"] == list(CLASSES)
    assert listed[0]["architecture"]["num_classes"] == 3
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["class_name"] for p in predictions] == [CLASSES[p["label"]] for p in predictions]
    assert list(predictions[0]["probabilities"]) == list(CLASSES)
    assert [p["label"] for p in predictions] == test_labels[:8].tolist()  # it learned the bands
    assert resized.status_code == 200 and resized.json()["predictions"][0]["class_name"] in CLASSES
    assert v2["parameters"]["class_names"] == list(CLASSES) and v2["outputs"][0]["shape"] == [-1, 3]
