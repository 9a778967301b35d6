"""A model's pass in torch, from the checkpoint's weights: on the CPU or CUDA."""

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from models import StackedAutoencoder, load_checkpoint, to_model_input
from models.card import ModelCard
from models.ood import Judge, reconstruction_errors
from service.core.passes import Pass


class TorchRunner:
    runtime = "torch"

    def __init__(self, model: StackedAutoencoder, card: ModelCard, judge: Judge, device: torch.device) -> None:
        self.model, self.card, self.judge, self.torch_device = model, card, judge, device
        self.device = str(device)

    @classmethod
    def load(cls, directory: Path, device: str, threads: int) -> "TorchRunner":
        if threads:
            torch.set_num_threads(threads)
        checkpoint = load_checkpoint(directory, device, exactly=True)
        return cls(checkpoint.model, checkpoint.card, checkpoint.judge, torch.device(device))

    @torch.inference_mode()
    def run(self, pixels: NDArray[np.uint8]) -> Pass:
        x = to_model_input(torch.from_numpy(pixels)).to(self.torch_device)  # (N, 784)
        layers = self.model.encode_layers(x)  # (N, 400), (N, 256): shared by the head, the decoder and the score
        rebuilt = self.model.decode(layers[-1])  # (N, 784)
        log_probabilities = self.model.classify_code(layers[-1])  # (N, classes)
        # The head gives log-probabilities, which differ from the logits by a constant per image: the same softmax.
        temperature = self.card.temperature
        probabilities = log_probabilities.exp() if temperature == 1.0 else (log_probabilities / temperature).softmax(1)
        errors = reconstruction_errors(x, rebuilt)
        scores, flagged = self.judge(x, layers, errors)
        return Pass(
            probabilities.cpu().numpy(),
            log_probabilities.cpu().numpy(),
            [h.cpu().numpy() for h in layers],
            rebuilt.cpu().numpy(),
            errors.cpu().numpy(),
            scores.float().cpu().numpy(),
            (~flagged).cpu().numpy(),
        )
