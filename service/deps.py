"""Dependencies as Annotated aliases, so route signatures stay short."""

from typing import Annotated

from fastapi import Depends, Query, Request

from service.batchers import Batchers
from service.errors import InputError, NotFound
from service.inputs import Limits
from service.registry import KNOWN_MODELS, Registry, ServedModel
from service.settings import Settings


class NotReady(InputError):
    status_code = 503


def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def get_batchers(request: Request) -> Batchers:
    batchers: Batchers = request.app.state.batchers
    return batchers


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]
BatchersDep = Annotated[Batchers, Depends(get_batchers)]
RegistryDep = Annotated[Registry, Depends(get_registry)]


def get_model(
    registry: RegistryDep,
    settings: SettingsDep,
    model: Annotated[
        str | None, Query(description="model name: mnist or fashion-mnist (default from settings)")
    ] = None,
) -> ServedModel:
    name = model or settings.default_model
    if name in registry.models:
        return registry.models[name]
    if name in registry.failures:
        raise NotReady(f"model {name!r} is not loaded: {registry.failures[name]}")
    known = ", ".join(sorted(set(KNOWN_MODELS) | set(registry.models)))
    raise NotFound(f"unknown model {name[:64]!r}; known models: {known}")


def get_limits(settings: SettingsDep) -> Limits:
    return Limits(settings.max_upload_bytes, settings.max_batch_images, settings.max_image_pixels)


ModelDep = Annotated[ServedModel, Depends(get_model)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
ResizeQuery = Annotated[
    bool,
    Query(
        description="prepare a picture of any size the way the data set was made: "
        "invert a light background, crop, fit, centre"
    ),
]
