"""The one set of handlers that renders the core's errors as HTTP answers.

Answers say `{"detail": ...}` on the native routes and `{"error": ...}`, the Open Inference Protocol's form,
under /v2. Anything unexpected is a generic 500 that quotes the request id, logged with it.
"""

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.errors import ServiceError, cut
from service.core.telemetry import REQUEST_ID_HEADER

log = logging.getLogger("sae_serve")
# The Open Inference Protocol's REST routes live under this prefix, and answer errors in its form.
PROTOCOL_PREFIX = "/v2"


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_body(request: Request, message: str) -> dict[str, str]:
    """The Open Inference Protocol's error form on its routes, the native `detail` everywhere else."""
    path = request.url.path
    on_protocol = path == PROTOCOL_PREFIX or path.startswith(f"{PROTOCOL_PREFIX}/")
    return {"error": message} if on_protocol else {"detail": message}


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(error_body(request, exc.detail), status_code=exc.status_code, headers=exc.headers or None)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse(error_body(request, "; ".join(parts)), status_code=422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.status_code != 404 else f"no route {cut(request.url.path)}; see /docs for the API"
    return JSONResponse(error_body(request, str(detail)), status_code=exc.status_code, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request %s to %s failed", request_id(request), request.url.path, exc_info=exc)
    return JSONResponse(
        error_body(request, f"internal error; quote request id {request_id(request)} when reporting it"),
        status_code=500,
        headers={REQUEST_ID_HEADER: request_id(request)},
    )


HANDLERS: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
    (ServiceError, service_error),
    (RequestValidationError, validation_error),
    (StarletteHTTPException, http_error),
    (Exception, unexpected_error),
]


def add_error_handlers(app: FastAPI) -> None:
    for kind, handler in HANDLERS:
        app.add_exception_handler(kind, handler)


async def render_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer the app's handlers give `exc`, for the routes that run outside FastAPI's (service.http.lane)."""
    handler = next(handler for kind, handler in HANDLERS if isinstance(exc, kind))
    return await handler(request, exc)
