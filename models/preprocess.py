"""The one function that turns pixels into model input: training, evaluation and serving all call it."""

import torch

from models.config import IMAGE_SIDE


def to_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels of shape (N, 28, 28) or (N, 784) to float32 (N, 784) in [0, 1]."""
    if pixels.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.shape[-1] * (pixels.shape[-2] if pixels.dim() == 3 else 1) != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"expected images of {IMAGE_SIDE}x{IMAGE_SIDE} pixels, got shape {tuple(pixels.shape)}")
    return pixels.reshape(pixels.shape[0], IMAGE_SIDE * IMAGE_SIDE).to(torch.float32).div_(255.0)
