"""The model repository API (Triton's model repository extension, under /v2): the versions in the artifacts
folder and their states, and loading or unloading a model while the service runs. Admin actions: they need
SAE_API_KEYS set, and a key.

Without parameters, load and unload act on the whole model as Triton does: load reads the model's policy
versions afresh, unload takes every version away. With `{"parameters": {"version": V}}` they load or unload
that one version beside the others, an extension of Triton's API.
"""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import State

from service.errors import PROTOCOL_PREFIX, Forbidden, UndecodableInput
from service.inputs import read_body
from service.registry import ModelStore, Registry
from service.schemas import ProtocolErrorResponse, error_responses
from service.settings import Settings

ERRORS = error_responses(
    ProtocolErrorResponse,
    {
        400: "malformed request, or a version that did not load (nothing served changed)",
        401: "missing or wrong API key",
        403: "no API keys set: the repository API is off",
        404: "unknown model or version",
    },
)
router = APIRouter(prefix=f"{PROTOCOL_PREFIX}/repository", tags=["model repository"], responses=ERRORS)
MAX_BODY_BYTES = 64 * 1024


def store_for_admin(request: Request) -> ModelStore:
    return admin_store(request.app.state)


def admin_store(state: State) -> ModelStore:
    """The app's model store, for the repository API over REST or gRPC: off (403) unless API keys are set."""
    settings: Settings = state.settings
    if not settings.api_keys:
        raise Forbidden("the model repository API is an admin API: set SAE_API_KEYS to enable it")
    store: ModelStore = state.store
    return store


async def json_body(request: Request) -> dict[str, Any]:
    body = await read_body(request, MAX_BODY_BYTES)
    if not body.strip():
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise UndecodableInput(f"request JSON is not valid: {e}") from e
    if not isinstance(parsed, dict):
        raise UndecodableInput("request must be a JSON object")
    return parsed


def requested_version(body: dict[str, Any]) -> int | None:
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise UndecodableInput('"parameters" must be an object, e.g. {"version": 2}')
    return version_parameter(parameters)


def version_parameter(parameters: dict[str, Any], ignored: frozenset[str] = frozenset()) -> int | None:
    """The one parameter of a load or unload, `version`; `ignored` names parameters taken and left unused."""
    unknown = sorted(set(parameters) - {"version"} - ignored)
    if unknown:
        raise UndecodableInput(f"unknown parameters {unknown}; the one parameter is 'version'")
    version = parameters.get("version")
    if version is None:
        return None
    if isinstance(version, str) and version.isascii() and version.isdigit() and len(version) < 10:
        version = int(version)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UndecodableInput(f"version {version!r} is not a version number (a whole number from 1)")
    return version


def index_entries(registry: Registry, ready_only: bool) -> list[dict[str, str]]:
    return [
        {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
        for e in registry.index
        if e.state == "READY" or not ready_only
    ]


@router.post("/index")
async def repository_index(request: Request) -> JSONResponse:
    """Every model and version in the repository with its state (READY or UNAVAILABLE) and why.
    `{"ready": true}` lists only the ready ones."""
    store = store_for_admin(request)
    ready = (await json_body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise UndecodableInput('"ready" must be true or false')
    return JSONResponse(index_entries(store.registry, ready))


@router.post("/models/{name}/load")
async def load_model(request: Request, name: str) -> JSONResponse:
    """Load the model's policy versions afresh, or with `{"parameters": {"version": V}}` version V beside the
    others. If anything asked for fails to load, nothing served changes and the answer says why."""
    store = store_for_admin(request)
    await store.load_model(name, requested_version(await json_body(request)))
    return JSONResponse({})


@router.post("/models/{name}/unload")
async def unload_model(request: Request, name: str) -> JSONResponse:
    """Unload every version of the model, or with `{"parameters": {"version": V}}` only V: requests that name no
    version then get the newest version still loaded (unloading the newest rolls back)."""
    store = store_for_admin(request)
    await store.unload_model(name, requested_version(await json_body(request)))
    return JSONResponse({})
