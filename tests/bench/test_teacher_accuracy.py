"""bench/training/teacher_accuracy.py: one teacher measured on the tiny data set, and a recipe without one refused."""

from pathlib import Path

import pytest

from bench.training import teacher_accuracy
from training.data import load_dataset


def test_a_teacher_is_measured_on_the_validation_split_and_the_test_set_apart(tiny_data_dir: Path) -> None:
    data = load_dataset("fashion-mnist")
    overrides = {"teacher_epochs": 3, "teacher_channels": 4, "batch_size": 32, "hflip": False, "erasing": 0.0}
    row = teacher_accuracy.measure(data, "best", overrides, 0)
    assert row["overrides"] == overrides and row["seed"] == 0 and row["dataset"] == "fashion-mnist"
    assert 0.5 < row["validation_accuracy"] <= 1 and 0.5 < row["test_accuracy"] <= 1  # toy classes are easy
    assert row["seconds"] > 0
    # conv 4 -> 8 channels (5x5) and 392 -> 256 -> classes
    classes = len(data.class_names)
    assert row["parameters"] == (25 * 4 + 4) + (25 * 4 * 8 + 8) + (392 * 256 + 256) + (256 * classes + classes)
    bn = teacher_accuracy.measure(data, "best", {**overrides, "teacher_arch": "bn"}, 0)
    assert bn["parameters"] != row["parameters"]
    again = teacher_accuracy.measure(data, "best", overrides, 0)
    assert again["validation_accuracy"] == row["validation_accuracy"]  # the seed decides the draws
    assert again["test_accuracy"] == row["test_accuracy"]


def test_a_recipe_without_a_teacher_is_refused(tiny_data_dir: Path) -> None:
    with pytest.raises(ValueError, match="trains no teacher"):
        teacher_accuracy.measure(load_dataset("mnist"), "default", {}, 0)
