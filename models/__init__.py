"""Architecture, preprocessing and checkpoint format shared by training and the service.

The card, the config and the checkpoint's layout need no torch (a server running the ONNX graph has none); the
torch model, its checkpoint reading and writing and the preprocessing function import torch when first named.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from models.card import FULL_FRAME, MNIST_FRAMING, Calibration, Framing, Graph, Metrics, ModelCard
from models.config import IMAGE_SIDE, PREPROCESSING, SAEConfig
from models.errors import CheckpointError

if TYPE_CHECKING:
    from models.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
    from models.device import DEVICE_CHOICES, resolve_device
    from models.preprocess import to_model_input
    from models.sae import StackedAutoencoder

_WITH_TORCH = {
    "LoadedCheckpoint": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
    "save_checkpoint": "models.checkpoint",
    "DEVICE_CHOICES": "models.device",
    "resolve_device": "models.device",
    "to_model_input": "models.preprocess",
    "StackedAutoencoder": "models.sae",
}


def __getattr__(name: str) -> Any:
    if name in _WITH_TORCH:
        return getattr(import_module(_WITH_TORCH[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = [
    "DEVICE_CHOICES",
    "FULL_FRAME",
    "IMAGE_SIDE",
    "MNIST_FRAMING",
    "PREPROCESSING",
    "Calibration",
    "CheckpointError",
    "Framing",
    "Graph",
    "LoadedCheckpoint",
    "Metrics",
    "ModelCard",
    "SAEConfig",
    "StackedAutoencoder",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "to_model_input",
]
