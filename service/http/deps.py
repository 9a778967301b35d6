"""Dependencies as Annotated aliases, so route signatures stay short; the app's data plane read in one place.

The inference routes take one dependency (`InferenceContextDep`): FastAPI's per-dependency cost is paid on
every request of the hot path.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request

from service.core.dataplane import DataPlane
from service.core.repository import ServedModel


def attach(app: FastAPI, plane: DataPlane) -> None:
    app.state.plane = plane


def plane_of(request: Request) -> DataPlane:
    """The data plane the app was made with (service.http.rest_app)."""
    plane: DataPlane = request.app.state.plane
    return plane


def served_model(request: Request, plane: DataPlane, name: str | None, version: str | None) -> ServedModel:
    served = plane.model(name, version)
    request.state.model = served.name  # for metrics and logs: only known names, never the raw request
    return served


PlaneDep = Annotated[DataPlane, Depends(plane_of)]


@dataclass(frozen=True)
class InferenceContext:
    """What an inference request needs: the data plane and the model that answers."""

    plane: DataPlane
    served: ServedModel


async def get_inference_context(
    request: Request,
    model: Annotated[
        str | None, Query(description="model name: mnist or fashion-mnist (default from settings)")
    ] = None,
    version: Annotated[
        str | None, Query(description="model version (default: the newest loaded)", examples=["1"])
    ] = None,
) -> InferenceContext:
    plane = plane_of(request)
    return InferenceContext(plane, served_model(request, plane, model or None, version))


InferenceContextDep = Annotated[InferenceContext, Depends(get_inference_context)]
ResizeQuery = Annotated[
    bool,
    Query(
        description="prepare a picture of any size the way the data set was made: "
        "invert a light background, crop, fit, centre"
    ),
]
