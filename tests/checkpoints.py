"""Tiny checkpoints: untrained but valid models with their cards, for the tests that load or serve one."""

from dataclasses import replace
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
    to_model_input,
)
from models.card import Embedding
from training.reference import build_reference

REFERENCE_IMAGES = 300  # the tiny reference set: the even indices 0, 2, ..., 598 of a split of 600


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


def save_with_reference(model: StackedAutoencoder, card: ModelCard, directory: Path) -> ModelCard:
    """Save the checkpoint with a reference set of REFERENCE_IMAGES random images (the seed's), labelled by their
    position mod the classes."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (REFERENCE_IMAGES, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.arange(REFERENCE_IMAGES) % model.config.num_classes
    held = (to_model_input(images[:50]), labels[:50])
    embedding = Embedding(model.config.depth, model.config.hidden_dims[-1])
    built = build_reference(
        model, embedding, (to_model_input(images), images, labels, 2 * torch.arange(REFERENCE_IMAGES)), held, held
    )
    written = replace(card, embedding=embedding, reference=built.section)
    return save_checkpoint(model, written, directory, reference=built.arrays)


def write_tiny_artifacts(root: Path) -> Path:
    """Untrained but valid checkpoints for both data sets (Fashion-MNIST's classes named c0..c9), with reference
    sets."""
    torch.manual_seed(0)
    for dataset, names in (("mnist", [str(d) for d in range(10)]), ("fashion-mnist", [f"c{d}" for d in range(10)])):
        framing = MNIST_FRAMING if dataset == "mnist" else FULL_FRAME
        save_with_reference(StackedAutoencoder(SAEConfig()), make_card(dataset, names, framing), root / dataset)
    return root
