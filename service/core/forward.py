"""The forward passes: uint8 batches in, numpy results out, one `Operation` each. No transport here."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models import to_model_input
from service.core.pixels import Batch
from service.core.repository import ServedModel

Floats = NDArray[np.float32]


@dataclass
class Classification:
    probabilities: Floats  # (N, classes), calibrated
    reconstruction_errors: Floats  # (N,)
    # (N, classes) the head's log-probabilities: they rank the classes. The temperature keeps that order in exact
    # arithmetic, but float32 rounding can tie calibrated probabilities that the logits still tell apart.
    scores: Floats


@dataclass
class Reconstructions:
    pixels: NDArray[np.uint8]  # (N, 28, 28)
    reconstruction_errors: Floats  # (N,)


def _input(served: ServedModel, pixels: NDArray[np.uint8]) -> torch.Tensor:
    return to_model_input(torch.from_numpy(pixels)).to(served.device)  # (N, 784)


def _probabilities(served: ServedModel, code: torch.Tensor) -> tuple[Floats, Floats]:
    """Class probabilities with the card's temperature, softmax(logits / T) with T fitted on the validation split,
    and the log-probabilities that rank the classes. The head gives log-probabilities, which differ from the
    logits by a constant per image: the same softmax."""
    log_probabilities = served.model.classify_code(code)
    temperature = served.card.temperature
    probabilities = log_probabilities.exp() if temperature == 1.0 else (log_probabilities / temperature).softmax(1)
    return probabilities.cpu().numpy(), log_probabilities.cpu().numpy()


def _errors(rebuilt: torch.Tensor, x: torch.Tensor) -> Floats:
    return (rebuilt - x).pow(2).mean(1).cpu().numpy()


@torch.inference_mode()
def classify(served: ServedModel, pixels: NDArray[np.uint8]) -> Classification:
    x = _input(served, pixels)
    code = served.model.encode(x)  # (N, 256), shared by the classifier and the decoder
    probabilities, scores = _probabilities(served, code)  # (N, classes) each
    return Classification(probabilities, _errors(served.model.decode(code), x), scores)


@torch.inference_mode()
def reconstruct(served: ServedModel, pixels: NDArray[np.uint8]) -> Reconstructions:
    x = _input(served, pixels)
    rebuilt = served.model.reconstruct(x)  # (N, 784) in [0, 1]
    as_pixels = rebuilt.mul(255).round().to(torch.uint8).view(-1, 28, 28)
    return Reconstructions(as_pixels.cpu().numpy(), _errors(rebuilt, x))


@torch.inference_mode()
def embed(served: ServedModel, pixels: NDArray[np.uint8], layer: int) -> Floats:
    return served.model.encode(_input(served, pixels), depth=layer).cpu().numpy()  # (N, 400) or (N, 256)


@dataclass
class AllOutputs:
    probabilities: Floats  # (N, classes), calibrated
    embeddings: Floats  # (N, 256)
    reconstructions: Floats  # (N, 784) in [0, 1]
    reconstruction_errors: Floats  # (N,)
    scores: Floats  # (N, classes) the log-probabilities that rank the classes (see Classification)


@torch.inference_mode()
def all_outputs(served: ServedModel, pixels: NDArray[np.uint8]) -> AllOutputs:
    """Every output of the model in one pass, for protocols that let the client pick outputs."""
    x = _input(served, pixels)
    code = served.model.encode(x)  # (N, 256)
    rebuilt = served.model.decode(code)  # (N, 784)
    probabilities, scores = _probabilities(served, code)
    return AllOutputs(probabilities, code.cpu().numpy(), rebuilt.cpu().numpy(), _errors(rebuilt, x), scores)


def abstained(probabilities: Floats, min_confidence: float) -> NDArray[np.bool_]:
    """(N,) whether each image's top probability is under `min_confidence`: where a consumer abstains."""
    refused: NDArray[np.bool_] = probabilities.max(1) < min_confidence
    return refused


@dataclass
class Operation:
    """What a request asks of a model: a forward pass by name, which batches only with the same operation."""

    name: str
    forward: Callable[[ServedModel, Batch], Any]
    layer: int = 0  # the embedding's layer, for the one operation that has one


CLASSIFY = Operation("classify", classify)
RECONSTRUCT = Operation("reconstruct", reconstruct)
ALL_OUTPUTS = Operation("infer", all_outputs)
EMBED = {layer: Operation("embed", partial(embed, layer=layer), layer) for layer in (1, 2)}
