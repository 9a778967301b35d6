"""Writing a checkpoint from a torch model, and rebuilding the torch model from one (the layout: models/layout.py)."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from models.card import ModelCard
from models.errors import CheckpointError
from models.layout import WEIGHTS_FILE, checkpoint_versions, read_card, sha256_file, verified, write_card, write_whole
from models.ood import Detector, Judge, ReconstructionOnly
from models.reference import ReferenceArrays, write_reference
from models.sae import StackedAutoencoder


@dataclass
class LoadedCheckpoint:
    model: StackedAutoencoder
    card: ModelCard
    path: Path
    judge: Judge  # the out-of-distribution score and flag: the card's fitted one, else reconstruction error alone


def save_checkpoint(
    model: StackedAutoencoder,
    card: ModelCard,
    directory: Path,
    ood_tensors: dict[str, torch.Tensor] | None = None,
    graph: bool = True,
    reference: ReferenceArrays | None = None,
) -> ModelCard:
    """Write the weights (and the out-of-distribution score's tensors where the card has a score, the reference set
    where it has one), the whole pass as an ONNX graph (unless `graph` is False: a checkpoint for torch alone), then
    the card with the model's config and the files' sha256; return that card."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_whole(weights, save(state))
    written = replace(card, config=model.config, weights_file=WEIGHTS_FILE, weights_sha256=sha256_file(weights))
    if card.ood is not None:
        if ood_tensors is None:
            raise ValueError("a card with an out-of-distribution score needs its tensors (means, precision)")
        ood_file = directory / card.ood.file
        write_whole(ood_file, save({k: v.detach().cpu().contiguous() for k, v in ood_tensors.items()}))
        written = replace(written, ood=replace(card.ood, sha256=sha256_file(ood_file)))
    if card.reference is not None:
        if reference is None:
            raise ValueError("a card with a reference set needs its arrays")
        written = replace(written, reference=write_reference(directory, card.reference, reference))
    if graph:
        from models.graph import export  # writing it needs the onnx package (the train extra); reading does not

        written = replace(written, graph=export(directory, written))
    write_card(directory, written)
    return written


def load_checkpoint(
    directory: Path | str, device: torch.device | str = "cpu", *, exactly: bool = False
) -> LoadedCheckpoint:
    """Rebuild the model from the card alone, after checking the weights against the card's sha256.

    `directory` is a checkpoint, or a model's folder of versions, which stands for its newest version;
    `exactly`: the checkpoint at the folder's top (a flat version 1), whatever versions the folder holds."""
    directory = Path(directory)
    versions = {} if exactly else checkpoint_versions(directory)
    if versions:
        directory = versions[max(versions)]  # the folder itself where it is a checkpoint with no later version
    card = read_card(directory)
    weights = verified(directory, card.weights_file, card.weights_sha256, "weights")
    try:
        model = StackedAutoencoder(card.config)
        model.load_state_dict(load_file(str(weights)))
    except (KeyError, ValueError, RuntimeError, TypeError, SafetensorError) as e:
        raise CheckpointError(f"{directory}: weights do not fit the card's config: {e}") from e
    model.to(device).eval()
    return LoadedCheckpoint(model=model, card=card, path=directory, judge=_judge(card, directory, device))


def _judge(card: ModelCard, directory: Path, device: torch.device | str) -> Judge:
    """The card's fitted out-of-distribution score, its tensors checked against the card; reconstruction error
    alone on cards written before there was one."""
    if card.ood is None:
        return ReconstructionOnly(card.error_threshold)
    path = verified(directory, card.ood.file, card.ood.sha256, "out-of-distribution score")
    try:
        tensors = load_file(str(path))
        for k, width in enumerate(card.config.widths):  # the input's, then each encoder layer's
            means, precision = tensors[f"means.{k}"], tensors[f"precision.{k}"]
            if means.shape != (card.config.num_classes, width) or precision.shape != (width, width):
                raise ValueError(
                    f"layer {k}: means {tuple(means.shape)} and precision {tuple(precision.shape)} for {width} units"
                )
        return Detector(card.ood, tensors).to(device).eval()
    except (KeyError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{path}: not the card's out-of-distribution tensors: {e}") from e
