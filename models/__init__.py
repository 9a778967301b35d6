"""Architecture, preprocessing and checkpoint format shared by training and the service."""

from models.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from models.device import DEVICE_CHOICES, resolve_device
from models.preprocess import IMAGE_SIDE, PREPROCESSING, to_model_input
from models.sae import SAEConfig, StackedAutoencoder

__all__ = [
    "DEVICE_CHOICES",
    "IMAGE_SIDE",
    "PREPROCESSING",
    "CheckpointError",
    "LoadedCheckpoint",
    "SAEConfig",
    "StackedAutoencoder",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "to_model_input",
]
