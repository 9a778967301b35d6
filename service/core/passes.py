"""What a runtime gives for a batch: every output of one pass, as numpy arrays (service/core/runtime.py chooses the
runtime; service/core/forward.py's operations take what they need)."""

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float32]
Flags = NDArray[np.bool_]


@dataclass
class Pass:
    """Every output of one pass over a batch of N images."""

    probabilities: Floats  # (N, classes), calibrated
    log_probabilities: Floats  # (N, classes): the head's, which rank the classes
    layers: list[Floats]  # each encoder layer's output: (N, 400), (N, 256)
    reconstructions: Floats  # (N, 784) in [0, 1]
    reconstruction_errors: Floats  # (N,)
    ood_scores: Floats  # (N,) models/ood.py's score: higher, less like the training images
    in_distribution: Flags  # (N,) not flagged by it


class Runner(Protocol):
    """A loaded model's pass in one runtime."""

    runtime: str  # "torch" or "onnxruntime"
    device: str  # "cpu", "cuda:0"

    def run(self, pixels: NDArray[np.uint8]) -> Pass:
        """The pass over uint8 pixels (N, 784)."""
        ...
