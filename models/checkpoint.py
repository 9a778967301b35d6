"""Checkpoint = model.safetensors (weights) + card.json (everything needed to rebuild and judge it).

A model's folder holds its versions: `<model>/<version>/` with integer versions, each a checkpoint.
A checkpoint at the top of the model's folder (`<model>/card.json`, the layout before versions) is
version 1 of that model, so folders written before versions existed keep working.
"""

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from models.card import ModelCard
from models.errors import CheckpointError
from models.ood import Detector, Judge, ReconstructionOnly
from models.sae import StackedAutoencoder

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


@dataclass
class LoadedCheckpoint:
    model: StackedAutoencoder
    card: ModelCard
    path: Path
    judge: Judge  # the out-of-distribution score and flag: the card's fitted one, else reconstruction error alone


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    model: StackedAutoencoder, card: ModelCard, directory: Path, ood_tensors: dict[str, torch.Tensor] | None = None
) -> ModelCard:
    """Write the weights (and the out-of-distribution score's tensors where the card has a score), then the card
    with the model's config and the files' sha256; return that card."""
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
    write_whole(directory / CARD_FILE, (json.dumps(written.to_dict(), indent=2) + "\n").encode())
    return written


def write_whole(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file beside it, renamed over it. The temporary file is made as
    open() makes a file (0666 less the umask: 0644 as a rule), so another user can serve what one user trained;
    a server reading the old file keeps its copy."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def checkpoint_files(directory: Path) -> list[Path]:
    """The files a checkpoint is made of, to copy it elsewhere: its card, its weights and, where the card has an
    out-of-distribution score, that score's tensors (plots and the like left out)."""
    card = read_card(directory)
    names = [CARD_FILE, card.weights_file, *([card.ood.file] if card.ood is not None else [])]
    return [directory / name for name in names]


def is_checkpoint(directory: Path) -> bool:
    return (directory / CARD_FILE).exists() or (directory / WEIGHTS_FILE).exists()


def checkpoint_versions(model_dir: Path) -> dict[int, Path]:
    """The model's versions and their folders: numbered subfolders holding a checkpoint, and version 1 the
    folder itself when it holds one at its top (the flat layout) and has no folder `1/`."""
    if not model_dir.is_dir():
        return {}
    versions = {
        int(child.name): child
        for child in model_dir.iterdir()
        if child.name.isascii()
        and child.name.isdigit()
        and child.name == str(int(child.name))
        and child.is_dir()
        and is_checkpoint(child)
    }
    if 1 not in versions and is_checkpoint(model_dir):
        versions[1] = model_dir
    return dict(sorted(versions.items()))


def next_version_dir(model_dir: Path) -> Path:
    """Where the model's next version goes: one past its highest, never over an existing one."""
    taken = (
        [int(child.name) for child in model_dir.iterdir() if child.name.isascii() and child.name.isdigit()]
        if model_dir.is_dir()
        else []
    )
    return model_dir / str(max([*taken, *checkpoint_versions(model_dir)], default=0) + 1)


def newest_version(model_dir: Path) -> Path:
    """The folder of the model's newest version."""
    versions = checkpoint_versions(model_dir)
    if not versions:
        raise CheckpointError(f"{model_dir} holds no checkpoint: no {CARD_FILE} at its top or in a version folder")
    return versions[max(versions)]


def read_card(directory: Path) -> ModelCard:
    card_path = directory / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(f"{card_path} not found: a checkpoint is a folder with {CARD_FILE} and {WEIGHTS_FILE}")
    try:
        raw = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{card_path} is not valid JSON: {e}") from e
    return ModelCard.from_dict(raw, str(card_path))


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
    weights = directory / card.weights_file
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found")
    actual = sha256_file(weights)
    if actual != card.weights_sha256:
        raise CheckpointError(
            f"{weights} does not match its card: sha256 {actual[:12]}... != {card.weights_sha256[:12]}...; "
            "the weights were changed or truncated, retrain or restore the checkpoint"
        )
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
    path = directory / card.ood.file
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the card's out-of-distribution score needs it")
    if sha256_file(path) != card.ood.sha256:
        raise CheckpointError(f"{path} does not match its card's sha256; retrain or restore the checkpoint")
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
