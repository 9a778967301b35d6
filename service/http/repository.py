"""The model repository API (Triton's model repository extension, under /v2): the versions in the artifacts
folder and their states, and loading or unloading a model while the service runs. Admin actions: they need
SAE_API_KEYS set, and a key.

Without parameters, load and unload act on the whole model as Triton does: load reads the model's policy
versions afresh, unload takes every version away. With `{"parameters": {"version": V}}` they load or unload
that one version beside the others, an extension of Triton's API.
"""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.core.dataplane import REPOSITORY_OFF
from service.core.errors import UndecodableInput
from service.http.bodies import json_object, read_body
from service.http.deps import PlaneDep
from service.http.errors import PROTOCOL_PREFIX
from service.http.schemas import ProtocolErrorResponse, error_responses

ERRORS = error_responses(
    ProtocolErrorResponse,
    {
        400: "malformed request, or a version that did not load or is not in the repository (nothing served changed)",
        401: "missing or wrong API key",
        403: "no API keys set: the repository API is off",
        404: "unknown model",
    },
)
router = APIRouter(prefix=f"{PROTOCOL_PREFIX}/repository", tags=["model repository"], responses=ERRORS)
MAX_BODY_BYTES = 64 * 1024


async def json_body(request: Request) -> dict[str, Any]:
    body = await read_body(request, MAX_BODY_BYTES)
    if not body.strip():
        return {}
    return json_object(body)


def parameters(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("parameters") or {}
    if not isinstance(given, dict):
        raise UndecodableInput('"parameters" must be an object, e.g. {"version": 2}')
    return given


@router.post("/index")
async def repository_index(request: Request, plane: PlaneDep) -> JSONResponse:
    """Every model and version in the repository with its state (READY or UNAVAILABLE) and why.
    `{"ready": true}` lists only the ready ones."""
    admin = plane.admin(REPOSITORY_OFF)
    ready = (await json_body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise UndecodableInput('"ready" must be true or false')
    return JSONResponse(admin.index(ready))


@router.post("/models/{name}/load")
async def load_model(request: Request, plane: PlaneDep, name: str) -> JSONResponse:
    """Load the model's policy versions afresh, or with `{"parameters": {"version": V}}` version V beside the
    others. If anything asked for fails to load, nothing served changes and the answer says why."""
    admin = plane.admin(REPOSITORY_OFF)
    await admin.load(name, parameters(await json_body(request)))
    return JSONResponse({})


@router.post("/models/{name}/unload")
async def unload_model(request: Request, plane: PlaneDep, name: str) -> JSONResponse:
    """Unload every version of the model, or with `{"parameters": {"version": V}}` only V: requests that name no
    version then get the newest version still loaded (unloading the newest rolls back)."""
    admin = plane.admin(REPOSITORY_OFF)
    await admin.unload(name, parameters(await json_body(request)))
    return JSONResponse({})
