"""/admin/reload: reload every model from the artifacts folder and swap them in at once, in every worker."""

from fastapi import APIRouter

from service.core.dataplane import RELOAD_OFF
from service.http.deps import PlaneDep
from service.http.schemas import ErrorResponse, ReloadResponse

router = APIRouter(tags=["admin"])


@router.post("/admin/reload", response_model=ReloadResponse, responses={403: {"model": ErrorResponse}})
async def reload(plane: PlaneDep) -> ReloadResponse:
    """Load the checkpoints anew; the new set replaces the old in one step only if at least one loads."""
    fresh, swapped = await plane.admin(RELOAD_OFF).reload()
    workers = max(1, plane.settings.workers)
    return ReloadResponse(swapped=swapped, loaded=sorted(fresh.models), failed=fresh.failures, workers=workers)
