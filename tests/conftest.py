"""Fixtures shared by every test package: tiny IDX data sets and tiny checkpoints."""

import gzip
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models import (
    FULL_FRAME,
    MNIST_FRAMING,
    Framing,
    Metrics,
    ModelCard,
    SAEConfig,
    StackedAutoencoder,
    save_checkpoint,
)
from training import data as data_module
from training.data import FILES

TINY_TRAIN = 256
TINY_TEST = 64


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_arrays(seed: int = 0) -> list[np.ndarray]:
    """Learnable toy images: each class lights up its own horizontal band of pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for count in (TINY_TRAIN, TINY_TEST):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 40, (count, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        out += [images, labels]
    return out


@pytest.fixture
def tiny_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder holding a tiny 'mnist' (raw files) and 'fashion-mnist' (.gz files) whose md5s are registered."""
    root = tmp_path / "data"
    for name, compress in (("mnist", False), ("fashion-mnist", True)):
        folder = root / name
        folder.mkdir(parents=True)
        md5s = []
        for file, array in zip(FILES, tiny_arrays(), strict=True):
            raw = idx_bytes(array)
            md5s.append(hashlib.md5(raw).hexdigest())
            target = folder / (f"{file}.gz" if compress else file)
            target.write_bytes(gzip.compress(raw) if compress else raw)
        spec = data_module.DATASETS[name]
        tiny = replace(spec, md5=(md5s[0], md5s[1], md5s[2], md5s[3]), sources=("existing",))
        monkeypatch.setitem(data_module.DATASETS, name, tiny)
    monkeypatch.setenv("SAE_DATA_DIR", str(root))
    return root


def make_card(dataset: str, class_names: list[str], framing: Framing = MNIST_FRAMING) -> ModelCard:
    """A card for an untrained model; save_checkpoint fills in its config and sha256."""
    return ModelCard(
        dataset=dataset,
        class_names=tuple(class_names),
        framing=framing,
        config=SAEConfig(num_classes=len(class_names)),
        metrics=Metrics(
            test_accuracy=0.5,
            reconstruction_mse=0.05,
            reconstruction_error_percentiles={"p50": 0.04, "p90": 0.06, "p99": 0.08, "p99.9": 0.1},
        ),
        pretraining="greedy",
        recipe_name="test",
        weights_sha256="",
    )


def write_tiny_artifacts(root: Path) -> Path:
    """Untrained but valid checkpoints for both data sets (Fashion-MNIST's classes named c0..c9)."""
    torch.manual_seed(0)
    for dataset, names in (("mnist", [str(d) for d in range(10)]), ("fashion-mnist", [f"c{d}" for d in range(10)])):
        framing = MNIST_FRAMING if dataset == "mnist" else FULL_FRAME
        save_checkpoint(StackedAutoencoder(SAEConfig()), make_card(dataset, names, framing), root / dataset)
    return root


@pytest.fixture
def tiny_artifacts(tmp_path: Path) -> Path:
    """An artifacts folder with untrained but valid checkpoints for both data sets."""
    return write_tiny_artifacts(tmp_path / "artifacts")
