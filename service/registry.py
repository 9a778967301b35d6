"""The models the service holds: loaded from the artifacts folder, verified against their cards, warmed up.

Every folder of the artifacts folder that holds a checkpoint is a model, named after the folder: a
checkpoint of any 28x28 data set is served with the class names and framing its card gives, with no
code change. Folders whose names start with a dot (staging areas) are not read.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from starlette.concurrency import run_in_threadpool

from models import CheckpointError, ModelCard, StackedAutoencoder, load_checkpoint, resolve_device
from models.checkpoint import CARD_FILE, WEIGHTS_FILE

log = logging.getLogger("sae_serve")


@dataclass
class ServedModel:
    name: str
    model: StackedAutoencoder
    card: ModelCard
    device: torch.device

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    @property
    def error_threshold(self) -> float:
        return self.card.error_threshold


@dataclass
class Registry:
    models: dict[str, ServedModel] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.models)

    @property
    def names(self) -> list[str]:
        """Every model found, loaded or not."""
        return sorted(set(self.models) | set(self.failures))


def checkpoint_folders(artifacts_dir: Path) -> list[Path]:
    if not artifacts_dir.is_dir():
        return []
    return sorted(
        folder
        for folder in artifacts_dir.iterdir()
        if folder.is_dir()
        and not folder.name.startswith(".")
        and ((folder / CARD_FILE).exists() or (folder / WEIGHTS_FILE).exists())
    )


def load_models(artifacts_dir: Path, device: torch.device) -> Registry:
    """Load every checkpoint found; a model that fails is recorded with its reason, the others serve."""
    registry = Registry()
    for directory in checkpoint_folders(artifacts_dir):
        name = directory.name
        try:
            checkpoint = load_checkpoint(directory, device)
        except CheckpointError as e:
            registry.failures[name] = str(e)
            log.error("model %s not loaded: %s", name, e)
            continue
        served = ServedModel(name, checkpoint.model, checkpoint.card, device)
        with torch.inference_mode():
            warm = torch.zeros(1, served.model.config.input_dim, device=device)
            served.model.classify(warm)
            served.model.reconstruct(warm)
        registry.models[name] = served
        log.info("model %s loaded on %s (sha256 %s)", name, device, checkpoint.card.weights_sha256[:12])
    return registry


class ModelStore:
    """The models being served and how to load them again: the one object on app.state that owns them."""

    def __init__(self, artifacts_dir: Path, device_choice: str) -> None:
        self.artifacts_dir, self.device_choice = artifacts_dir, device_choice
        self.device = torch.device("cpu")  # resolved by load(), which refuses CUDA where there is none
        self.registry = Registry()
        self._reload_lock = asyncio.Lock()

    def load(self) -> Registry:
        """The first load, before the server accepts connections."""
        self.device = resolve_device(self.device_choice)
        self.registry = load_models(self.artifacts_dir, self.device)
        return self.registry

    async def reload(self) -> tuple[Registry, bool]:
        """Load every model anew off the event loop, then swap the whole registry in one assignment.

        Requests already running keep the models they started with; the next ones get the new set. If no
        model loads, the old set stays. Returns the fresh registry and whether it was swapped in.
        """
        async with self._reload_lock:
            fresh = await run_in_threadpool(load_models, self.artifacts_dir, self.device)
            if fresh.ready:
                self.registry = fresh
                log.info("models reloaded: %s", ", ".join(sorted(fresh.models)))
            else:
                log.error("reload loaded no model (%s); keeping the models already loaded", fresh.failures)
            return fresh, fresh.ready
