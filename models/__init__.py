"""Architecture, preprocessing and checkpoint format shared by training and the service."""

from models.card import FULL_FRAME, MNIST_FRAMING, Calibration, Framing, Metrics, ModelCard
from models.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from models.device import DEVICE_CHOICES, resolve_device
from models.errors import CheckpointError
from models.preprocess import IMAGE_SIDE, PREPROCESSING, to_model_input
from models.sae import SAEConfig, StackedAutoencoder

__all__ = [
    "DEVICE_CHOICES",
    "FULL_FRAME",
    "IMAGE_SIDE",
    "MNIST_FRAMING",
    "PREPROCESSING",
    "Calibration",
    "CheckpointError",
    "Framing",
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
