"""Tiny checkpoints: untrained but valid models with their cards, for the tests that load or serve one."""

from pathlib import Path

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
