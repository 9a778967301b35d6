"""Versions of the tiny mnist model beside the first, and what each answers for four digit-like images."""

from pathlib import Path

import numpy as np
import torch

from models import SAEConfig, StackedAutoencoder, load_checkpoint, save_checkpoint, to_model_input
from tests.checkpoints import make_card
from tests.images import digit_like

DIGITS = np.stack([digit_like(seed) for seed in range(4)])


def add_version(artifacts: Path, version: int, seed: int) -> Path:
    """Another version of the tiny mnist model, with weights of its own."""
    torch.manual_seed(seed)
    folder = artifacts / "mnist" / str(version)
    save_checkpoint(StackedAutoencoder(SAEConfig()), make_card("mnist", [str(d) for d in range(10)]), folder)
    return folder


def expected_probabilities(folder: Path) -> np.ndarray:
    model = load_checkpoint(folder, exactly=True).model
    with torch.inference_mode():
        return model.classify(to_model_input(torch.from_numpy(DIGITS))).exp().numpy()
