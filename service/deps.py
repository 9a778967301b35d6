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
from service.registry import Registry, ServedModel, parse_version
from service.settings import Settings


async def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.store.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]
RegistryDep = Annotated[Registry, Depends(get_registry)]


def find_model(registry: Registry, name: str, version: int | None = None) -> ServedModel:
    """The model's newest loaded version, or the version asked for."""
    if name not in registry.models:
        if name in registry.failures:
            raise NotReady(f"model {name!r} is not loaded: {registry.failures[name]}")
        known = ", ".join(registry.names) or "none"
        raise NotFound(f"unknown model {name[:64]!r}; known models: {known}")
    if version is None:
        return registry.models[name]
    loaded = registry.versions[name]
    if version in loaded:
        return loaded[version]
    reason = next((e.reason for e in registry.index if e.name == name and e.version == version), "")
    served = ", ".join(map(str, loaded))
    if reason:
        raise NotReady(f"model {name!r} version {version} is not loaded: {reason}; loaded versions: {served}")
    raise NotFound(f"model {name!r} has no version {version}; loaded versions: {served}")


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
    version: Annotated[
        str | None, Query(description="model version (default: the newest loaded)", examples=["1"])
    ] = None,
) -> InferenceContext:
    state = request.app.state
    settings: Settings = state.settings
    served = find_model(state.store.registry, model or settings.default_model, parse_version(version))
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
