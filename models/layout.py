"""Where a checkpoint's files are, and reading them without torch: the card, the versions, the sha256 checks.

A checkpoint is a folder: card.json (everything needed to rebuild and judge the model), model.safetensors (the
weights), ood.safetensors (the out-of-distribution score's tensors, where the card has one), model.onnx (the
whole pass as an ONNX graph, where the card names one) and reference.safetensors (the training images' embeddings,
labels and pixels for /similar, where the card names it). A model's folder holds its versions: `<model>/<version>/`
with integer versions, each a checkpoint. A checkpoint at the top of the model's folder (`<model>/card.json`, the
layout before versions) is version 1 of that model, so folders written before versions existed keep working.
"""

import hashlib
import json
import os
from pathlib import Path

from models.card import ModelCard
from models.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
GRAPH_FILE = "model.onnx"
GRAPH_INPUT = "pixels"  # the graph's one input: uint8 (N, 784), row-major


def graph_outputs(depth: int) -> list[str]:
    """The graph's outputs, (N, ...) each: calibrated probabilities (softmax of the log-probabilities over the
    card's temperature), the head's log-probabilities (which rank the classes), each encoder layer's output (the
    last the code), the reconstruction in [0, 1], its error, the out-of-distribution score and whether the image
    is in distribution."""
    embeddings = [f"embedding_{k}" for k in range(1, depth + 1)]
    head = ["probabilities", "log_probabilities"]
    return [*head, *embeddings, "reconstruction", "reconstruction_error", "ood_score", "in_distribution"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def checkpoint_files(directory: Path, graph: bool = True, reference: bool = True) -> list[Path]:
    """The files a checkpoint is made of, to copy it elsewhere: its card, its weights and, where the card has an
    out-of-distribution score, that score's tensors; its graph where it has one and `graph` (without it, the
    checkpoint serves in torch only), and its reference set where it has one and `reference` (without it, the
    checkpoint serves all but /similar). Plots and the like are left out."""
    card = read_card(directory)
    names = [CARD_FILE, card.weights_file, *([card.ood.file] if card.ood is not None else [])]
    names += [card.graph.file] if card.graph is not None and graph else []
    names += [card.reference.file] if card.reference is not None and reference else []
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


def write_card(directory: Path, card: ModelCard) -> None:
    write_whole(directory / CARD_FILE, (json.dumps(card.to_dict(), indent=2) + "\n").encode())


def verified(directory: Path, name: str, sha256: str, what: str) -> Path:
    """The path of one of the checkpoint's files, after checking it against the sha256 its card gives."""
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the card's {what} needs it")
    actual = sha256_file(path)
    if actual != sha256:
        raise CheckpointError(
            f"{path} does not match its card: sha256 {actual[:12]}... != {sha256[:12]}...; "
            "the file was changed or truncated, retrain or restore the checkpoint"
        )
    return path
