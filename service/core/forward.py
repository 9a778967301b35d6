"""The operations on a model's pass: uint8 batches in, numpy results out, one `Operation` each. No transport, and
no runtime, here: the model's runner (service/core/runtime.py) runs the pass."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.card import MAX_NEIGHBOURS
from models.config import IMAGE_SIDE
from models.reference import nearest, normalised, vote
from service.core.passes import Flags, Floats, Pass
from service.core.pixels import Batch
from service.core.repository import ServedModel


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


def _pass(served: ServedModel, pixels: NDArray[np.uint8]) -> Pass:
    return served.runner.run(pixels.reshape(len(pixels), -1))  # (N, 784): a view of the batch, no copy


def classify(served: ServedModel, pixels: NDArray[np.uint8]) -> Classification:
    p = _pass(served, pixels)
    return Classification(
        p.probabilities, p.reconstruction_errors, p.log_probabilities, p.ood_scores, p.in_distribution
    )


def as_pixels(reconstructions: Floats) -> NDArray[np.uint8]:
    """(N, 784) in [0, 1] to uint8 (N, 28, 28), rounding half to even as torch does."""
    return np.rint(reconstructions * 255).astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def reconstruct(served: ServedModel, pixels: NDArray[np.uint8]) -> Reconstructions:
    p = _pass(served, pixels)
    return Reconstructions(as_pixels(p.reconstructions), p.reconstruction_errors, p.ood_scores, p.in_distribution)


def embed(served: ServedModel, pixels: NDArray[np.uint8], layer: int) -> Embeddings:
    p = _pass(served, pixels)
    return Embeddings(p.layers[layer - 1], p.ood_scores, p.in_distribution)


def served_embedding(served: ServedModel, p: Pass) -> Floats:
    """The embedding embedding consumers get (the card's `embedding`): its layer, scaled to unit length."""
    return normalised(p.layers[served.card.served_embedding.layer - 1])


def embed_served(served: ServedModel, pixels: NDArray[np.uint8]) -> Embeddings:
    p = _pass(served, pixels)
    return Embeddings(served_embedding(served, p), p.ood_scores, p.in_distribution)


@dataclass
class Similar:
    probabilities: Floats  # (N, classes), calibrated
    scores: Floats  # (N, classes) the log-probabilities that rank the classes (see Classification)
    ood_scores: Floats  # (N,)
    in_distribution: Flags  # (N,)
    positions: NDArray[
        np.int64
    ]  # (N, MAX_NEIGHBOURS) the nearest reference images' positions in the set, nearest first
    similarities: Floats  # (N, MAX_NEIGHBOURS) their cosine similarities
    votes: NDArray[np.int64]  # (N,) the k-NN vote of the card's vote_k nearest
    vote_shares: NDArray[np.float64]  # (N,) the share of them that voted for it


def similar(served: ServedModel, pixels: NDArray[np.uint8]) -> Similar:
    """The classifier's outputs, the MAX_NEIGHBOURS nearest reference images of each image (one search for the batch,
    whatever k each request asked for) and their vote."""
    reference, section = served.searched()
    p = _pass(served, pixels)
    positions, similarities = nearest(reference.columns, served_embedding(served, p), MAX_NEIGHBOURS)
    votes, shares = vote(reference.labels[positions[:, : section.vote_k]], len(served.class_names))
    return Similar(
        p.probabilities, p.log_probabilities, p.ood_scores, p.in_distribution, positions, similarities, votes, shares
    )


@dataclass
class AllOutputs:
    probabilities: Floats  # (N, classes), calibrated
    embeddings: Floats  # (N, 256)
    reconstructions: Floats  # (N, 784) in [0, 1]
    reconstruction_errors: Floats  # (N,)
    scores: Floats  # (N, classes) the log-probabilities that rank the classes (see Classification)
    ood_scores: Floats  # (N,)
    in_distribution: Flags  # (N,)


def all_outputs(served: ServedModel, pixels: NDArray[np.uint8]) -> AllOutputs:
    """Every output of the model in one pass, for protocols that let the client pick outputs."""
    p = _pass(served, pixels)
    return AllOutputs(
        p.probabilities,
        p.layers[-1],
        p.reconstructions,
        p.reconstruction_errors,
        p.log_probabilities,
        p.ood_scores,
        p.in_distribution,
    )


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
EMBED_SERVED = Operation("embed_served", embed_served)  # /v1/embeddings
SIMILAR = Operation("similar", similar)
