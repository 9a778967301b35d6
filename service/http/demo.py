"""The browser demo at `/`: one self-contained page, no external scripts or fonts."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()
PAGE = (Path(__file__).resolve().parent / "static" / "index.html").read_text()


@router.get("/", include_in_schema=False)
async def demo() -> HTMLResponse:
    return HTMLResponse(PAGE)
