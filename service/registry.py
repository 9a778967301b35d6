"""The models the service holds: loaded from the artifacts folder, verified against their cards, warmed up."""

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from models import CheckpointError, StackedAutoencoder, load_checkpoint, resolve_device

log = logging.getLogger("sae_serve")
KNOWN_MODELS = ("mnist", "fashion-mnist")


@dataclass
class ServedModel:
    name: str
    model: StackedAutoencoder
    card: dict[str, Any]
    device: torch.device

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])

    @property
    def error_threshold(self) -> float:
        """Reconstruction error at or under which an image counts as in-distribution (the test set's p99)."""
        return float(self.card["metrics"]["reconstruction_error_percentiles"]["p99"])


@dataclass
class Registry:
    models: dict[str, ServedModel] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.models)


def load_models(artifacts_dir: Path, device: torch.device) -> Registry:
    """Load every known checkpoint found; a model that fails is recorded with its reason, the others serve."""
    registry = Registry()
    for name in KNOWN_MODELS:
        directory = artifacts_dir / name
        if not directory.exists():
            registry.failures[name] = f"no checkpoint in {directory}"
            continue
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
        log.info("model %s loaded on %s (sha256 %s)", name, device, checkpoint.card["weights_sha256"][:12])
    return registry


_reload_lock = asyncio.Lock()


async def reload_registry(state: State) -> tuple[Registry, bool]:
    """Load every model anew off the event loop, then swap the whole registry in one assignment.

    Requests already running keep the models they started with; the next ones get the new set. If no
    model loads, the old set stays. Returns the fresh registry and whether it was swapped in.
    """
    async with _reload_lock:
        settings = state.settings
        fresh = await run_in_threadpool(load_models, settings.artifacts_dir, resolve_device(settings.device))
        if fresh.ready:
            state.registry = fresh
            log.info("models reloaded: %s", ", ".join(sorted(fresh.models)))
        else:
            log.error("reload loaded no model (%s); keeping the models already loaded", fresh.failures)
        return fresh, fresh.ready
