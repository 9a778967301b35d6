"""Dependencies as Annotated aliases, so route signatures stay short.

The inference routes take one dependency (`InferenceContextDep`): FastAPI's per-dependency cost is paid on
every request of the hot path.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from service.errors import NotFound, NotReady
from service.inputs import Limits
from service.microbatching import ModelBatchers
from service.registry import Registry, ServedModel
from service.settings import Settings


async def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.store.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]
RegistryDep = Annotated[Registry, Depends(get_registry)]


def find_model(registry: Registry, name: str) -> ServedModel:
    if name in registry.models:
        return registry.models[name]
    if name in registry.failures:
        raise NotReady(f"model {name!r} is not loaded: {registry.failures[name]}")
    known = ", ".join(registry.names) or "none"
    raise NotFound(f"unknown model {name[:64]!r}; known models: {known}")


@dataclass(frozen=True)
class InferenceContext:
    """What an inference request needs: its model, the batchers and the input limits."""

    served: ServedModel
    batchers: ModelBatchers
    limits: Limits
    timeout_s: float


async def get_inference_context(
    request: Request,
    model: Annotated[
        str | None, Query(description="model name: mnist or fashion-mnist (default from settings)")
    ] = None,
) -> InferenceContext:
    state = request.app.state
    settings: Settings = state.settings
    served = find_model(state.store.registry, model or settings.default_model)
    request.state.model = served.name  # for metrics and logs: only known names, never the raw query
    return InferenceContext(served, state.batchers, state.limits, settings.request_timeout_s)


InferenceContextDep = Annotated[InferenceContext, Depends(get_inference_context)]
ResizeQuery = Annotated[
    bool,
    Query(
        description="prepare a picture of any size the way the data set was made: "
        "invert a light background, crop, fit, centre"
    ),
]
