"""/admin/reload: reload every model from the artifacts folder and swap them in at once, in every worker."""

import os
import signal

from fastapi import APIRouter, Request

from service.errors import Forbidden
from service.schemas import ErrorResponse, ReloadResponse
from service.settings import SUPERVISOR_ENV, Settings

router = APIRouter(tags=["admin"])


@router.post("/admin/reload", response_model=ReloadResponse, responses={403: {"model": ErrorResponse}})
async def reload(request: Request) -> ReloadResponse:
    """Load the checkpoints anew; the new set replaces the old in one step only if at least one loads."""
    settings: Settings = request.app.state.settings
    if not settings.api_keys:
        raise Forbidden("reloading is an admin action: set SAE_API_KEYS to enable /admin/reload (or send SIGHUP)")
    fresh, swapped = await request.app.state.store.reload()
    workers = max(1, settings.workers)
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor is not None and workers > 1:
        os.kill(int(supervisor), signal.SIGHUP)  # the supervisor asks every worker, this one included, to reload
    return ReloadResponse(swapped=swapped, loaded=sorted(fresh.models), failed=fresh.failures, workers=workers)
