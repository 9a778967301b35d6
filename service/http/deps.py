"""Dependencies as Annotated aliases, so route signatures stay short; the app's data plane read in one place.

The inference routes take none: they read their query with one pydantic model (`inference_query`), as FastAPI's
per-parameter solving is paid on every request of the hot path.
"""

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

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


class InferenceQuery(BaseModel):
    """The query of /classify, /reconstruct and /embed, validated in one step: FastAPI's solving of one parameter at a
    time was a tenth of these routes' CPU time (bench/serving/profile_request.py). Unknown parameters are ignored, as
    FastAPI ignores them; a bad value is a 422 worded as FastAPI words it."""

    model: str | None = Field(None, description="model name: mnist or fashion-mnist (default from settings)")
    version: str | None = Field(None, description="model version (default: the newest loaded)", examples=["1"])
    resize: bool = Field(
        False,
        description="prepare a picture of any size the way the data set was made: invert a light background, crop, "
        "fit, centre",
    )


Query = TypeVar("Query", bound=InferenceQuery)


def inference_query(request: Request, model: type[Query]) -> tuple[InferenceContext, Query]:
    """The route's query, and the model it names with the data plane."""
    params = dict(request.query_params)
    plane = plane_of(request)
    # The model first (an unknown one is a 404 whatever the rest says), then the rest of the query.
    context = InferenceContext(plane, served_model(request, plane, params.get("model") or None, params.get("version")))
    try:
        return context, model.model_validate(params)
    except ValidationError as e:
        raise RequestValidationError([{**error, "loc": ("query", *error["loc"])} for error in e.errors()]) from None


def query_parameters(model: type[InferenceQuery]) -> list[dict[str, Any]]:
    """The query model's fields as OpenAPI parameters, for the routes that read their query with it."""
    schema = model.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": field.pop("description", ""),
            "schema": {key: value for key, value in field.items() if key != "title"},
        }
        for name, field in schema["properties"].items()
    ]
