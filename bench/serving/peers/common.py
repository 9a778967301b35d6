"""What both peers share: the same checkpoint, the same preprocessing, a plain PNG decode."""

import io
import os

import numpy as np
import torch
from PIL import Image

from models import load_checkpoint, to_model_input

CHECKPOINT = os.environ.get("PEER_CHECKPOINT", "artifacts/mnist")


def load_model() -> tuple[torch.nn.Module, list[str]]:
    checkpoint = load_checkpoint(CHECKPOINT, "cpu")
    return checkpoint.model, list(checkpoint.card.class_names)


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint8)


@torch.inference_mode()
def classify(model: torch.nn.Module, pixels: np.ndarray) -> list[list[float]]:
    """Probabilities for a (N, 28, 28) uint8 batch."""
    return model.classify(to_model_input(torch.from_numpy(pixels))).exp().tolist()


def answer(probabilities: list[float], class_names: list[str]) -> dict[str, object]:
    label = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {
        "label": label,
        "class_name": class_names[label],
        "probabilities": dict(zip(class_names, probabilities, strict=True)),
    }
