"""The forward passes: uint8 batches in, numpy results out, one `Operation` each. No transport here."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models import to_model_input
from models.ood import reconstruction_errors
from service.core.pixels import Batch
from service.core.repository import ServedModel

Floats = NDArray[np.float32]


Flags = NDArray[np.bool_]


@dataclass
class Classification:
    probabilities: Floats  # (N, classes), calibrated
    reconstruction_errors: Floats  # (N,)
    # (N, classes) the head's log-probabilities: they rank the classes. The temperature keeps that order in exact
    # arithmetic, but float32 rounding can tie calibrated probabilities that the logits still tell apart.
    scores: Floats
    ood_scores: Floats  # (N,) the out-of-distribution score (models/ood.py): higher, less like the training images
    in_distribution: Flags  # (N,) not flagged by it


@dataclass
class Reconstructions:
    pixels: NDArray[np.uint8]  # (N, 28, 28)
    reconstruction_errors: Floats  # (N,)
    ood_scores: Floats  # (N,)
    in_distribution: Flags  # (N,)


@dataclass
class Embeddings:
    vectors: Floats  # (N, 400) or (N, 256)
    ood_scores: Floats  # (N,)
    in_distribution: Flags  # (N,)


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


def _judged(
    served: ServedModel, x: torch.Tensor, layers: list[torch.Tensor], rebuilt: torch.Tensor
) -> tuple[Floats, Floats, Flags]:
    """(the reconstruction errors, the out-of-distribution scores, whether each image is in distribution), from
    the model's one pass; the errors computed once, for the answer and the score."""
    assert served.judge is not None  # ServedModel sets it
    errors = reconstruction_errors(x, rebuilt)
    scores, flagged = served.judge(x, layers, errors)
    return errors.cpu().numpy(), scores.float().cpu().numpy(), (~flagged).cpu().numpy()


@torch.inference_mode()
def classify(served: ServedModel, pixels: NDArray[np.uint8]) -> Classification:
    x = _input(served, pixels)
    layers = served.model.encode_layers(x)  # (N, 400), (N, 256): shared by the classifier, decoder and score
    rebuilt = served.model.decode(layers[-1])
    probabilities, scores = _probabilities(served, layers[-1])  # (N, classes) each
    errors, ood_scores, inside = _judged(served, x, layers, rebuilt)
    return Classification(probabilities, errors, scores, ood_scores, inside)


@torch.inference_mode()
def reconstruct(served: ServedModel, pixels: NDArray[np.uint8]) -> Reconstructions:
    x = _input(served, pixels)
    layers = served.model.encode_layers(x)
    rebuilt = served.model.decode(layers[-1])  # (N, 784) in [0, 1]
    as_pixels = rebuilt.mul(255).round().to(torch.uint8).view(-1, 28, 28)
    return Reconstructions(as_pixels.cpu().numpy(), *_judged(served, x, layers, rebuilt))


@torch.inference_mode()
def embed(served: ServedModel, pixels: NDArray[np.uint8], layer: int) -> Embeddings:
    x = _input(served, pixels)
    layers = served.model.encode_layers(x)  # (N, 400), (N, 256)
    vectors = layers[layer - 1].cpu().numpy()
    _, ood_scores, inside = _judged(served, x, layers, served.model.decode(layers[-1]))
    return Embeddings(vectors, ood_scores, inside)


@dataclass
class AllOutputs:
    probabilities: Floats  # (N, classes), calibrated
    embeddings: Floats  # (N, 256)
    reconstructions: Floats  # (N, 784) in [0, 1]
    reconstruction_errors: Floats  # (N,)
    scores: Floats  # (N, classes) the log-probabilities that rank the classes (see Classification)
    ood_scores: Floats  # (N,)
    in_distribution: Flags  # (N,)


@torch.inference_mode()
def all_outputs(served: ServedModel, pixels: NDArray[np.uint8]) -> AllOutputs:
    """Every output of the model in one pass, for protocols that let the client pick outputs."""
    x = _input(served, pixels)
    layers = served.model.encode_layers(x)
    code = layers[-1]  # (N, 256)
    rebuilt = served.model.decode(code)  # (N, 784)
    probabilities, scores = _probabilities(served, code)
    errors, ood_scores, inside = _judged(served, x, layers, rebuilt)
    return AllOutputs(probabilities, code.cpu().numpy(), rebuilt.cpu().numpy(), errors, scores, ood_scores, inside)


def abstained(probabilities: Floats, min_confidence: float, in_distribution: Flags) -> Flags:
    """(N,) where a consumer that asks for `min_confidence` abstains: the top probability is under it, or (any
    min_confidence above 0) the image is flagged as unlike the training images."""
    refused: Flags = probabilities.max(1) < min_confidence
    if min_confidence > 0:
        refused |= ~in_distribution
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
