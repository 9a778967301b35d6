"""A trained model's reference set (models/reference.py): its training images' unit embeddings, labels and pixels,
with the k-NN vote's k chosen on the validation split and its accuracy measured there and on the test set."""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from models import CheckpointError, ModelCard, load_checkpoint, to_model_input
from models.card import REFERENCE_FILE, Embedding, Reference
from models.layout import write_card
from models.reference import ReferenceArrays, normalised, vote_accuracy, write_reference
from models.sae import StackedAutoencoder
from training.calibration import validation_split
from training.data import Dataset

VOTE_KS = (1, 3, 5, 7, 10, 15, 20)  # the k the validation split chooses from
CHUNK = 8192


@dataclass
class BuiltReference:
    arrays: ReferenceArrays
    section: Reference  # its sha256 is filled in when the file is written (models.reference.write_reference)


def served_embeddings(model: StackedAutoencoder, x: torch.Tensor, embedding: Embedding) -> NDArray[np.float32]:
    """The embedding as served for model inputs x (N, 784): the card's layer, scaled to unit length, in chunks."""
    chunks = []
    with torch.no_grad():
        for chunk in x.split(CHUNK):
            chunks.append(model.encode(chunk, embedding.layer).float().cpu().numpy())
    return normalised(np.concatenate(chunks) if chunks else np.zeros((0, embedding.dim), np.float32))


def build_reference(
    model: StackedAutoencoder,
    embedding: Embedding,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
) -> BuiltReference:
    """`train`: the training images as model inputs (N, 784) and as pixels (N, 28, 28) uint8, their labels and
    their indices in the data set's train split; `validation` and `test`: model inputs and labels, which choose k
    and measure the vote."""
    model.eval()
    x, images, labels, indices = train
    arrays = ReferenceArrays.of(
        served_embeddings(model, x, embedding),
        images.reshape(len(images), -1).cpu().numpy().astype(np.uint8),
        labels.cpu().numpy().astype(np.int64),
        indices.cpu().numpy().astype(np.int64),
    )
    classes = model.config.num_classes
    on_validation = _accuracies(model, arrays, embedding, validation, classes)
    vote_k = max(VOTE_KS, key=lambda k: (on_validation[k], -k))  # the best, the smallest k among equals
    on_test = _accuracies(model, arrays, embedding, test, classes, [vote_k])
    section = Reference(REFERENCE_FILE, "", "train", len(arrays), vote_k, on_validation[vote_k], on_test[vote_k])
    return BuiltReference(arrays, section)


def _accuracies(
    model: StackedAutoencoder,
    arrays: ReferenceArrays,
    embedding: Embedding,
    split: tuple[torch.Tensor, torch.Tensor],
    classes: int,
    ks: list[int] | None = None,
) -> dict[int, float]:
    x, y = split
    queries = served_embeddings(model, x, embedding)
    return vote_accuracy(arrays, queries, y.cpu().numpy().astype(np.int64), ks or list(VOTE_KS), classes)


def reference_for(model: StackedAutoencoder, card: ModelCard, data: Dataset, device: torch.device) -> BuiltReference:
    """The reference set of a model trained before reference sets: its training images are the data set's train
    split less the validation split its card's seed and count held out."""
    seed, calibration = card.provenance.get("seed"), card.calibration
    if not isinstance(seed, int) or calibration is None:
        raise CheckpointError("the card names no seed and validation split: its training images are not known")
    train_index, validation_index = validation_split(data.train_labels, calibration.validation_examples, seed)
    x = to_model_input(data.train_images).to(device)
    return build_reference(
        model,
        card.served_embedding,
        (x[train_index.to(device)], data.train_images[train_index], data.train_labels[train_index], train_index),
        (x[validation_index.to(device)], data.train_labels[validation_index]),
        (to_model_input(data.test_images).to(device), data.test_labels),
    )


def add_reference(directory: Path, data: Dataset, device: torch.device) -> ModelCard:
    """Build and write the reference set of the checkpoint in `directory` and name it in its card (format 6 from
    then on); return the new card."""
    checkpoint = load_checkpoint(directory, device, exactly=True)
    card = checkpoint.card
    if card.dataset != data.name:
        raise CheckpointError(f"{directory} is a model of {card.dataset}, not {data.name}")
    built = reference_for(checkpoint.model, card, data, device)
    section = write_reference(directory, built.section, built.arrays)
    written = replace(card, embedding=card.served_embedding, reference=section)
    write_card(directory, written)
    return written
