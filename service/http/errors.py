"""The one set of handlers that renders the core's errors as HTTP answers.

Answers say `{"detail": ...}` on the native routes, `{"error": ...}`, the Open Inference Protocol's form, under /v2,
and `{"error": {"message", "type", "param", "code"}}`, OpenAI's, under /v1. Anything unexpected is a generic 500
that quotes the request id, logged with it.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.errors import ServiceError, cut
from service.core.telemetry import REQUEST_ID_HEADER

log = logging.getLogger("sae_serve")
# The Open Inference Protocol's REST routes live under this prefix, and answer errors in its form; the OpenAI API's
# under the other, in OpenAI's.
PROTOCOL_PREFIX = "/v2"
OPENAI_PREFIX = "/v1"
# OpenAI's error `type` and `code` for each status; others are invalid requests with no code.
OPENAI_KINDS = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", "timeout"),
    413: ("invalid_request_error", "request_too_large"),
    500: ("server_error", None),
    503: ("server_error", "unavailable"),
}


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


def error_payload(
    path: str, status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """The error form of the route at `path`: the Open Inference Protocol's under /v2, OpenAI's under /v1 (`param`:
    the request field at fault; `code`: the error's, else the status's), the native `detail` everywhere else."""
    if under(path, PROTOCOL_PREFIX):
        return {"error": message}
    if under(path, OPENAI_PREFIX):
        kind, status_code = OPENAI_KINDS.get(status, ("invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": param, "code": code or status_code}}
    return {"detail": message}


def error_answer(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None, exc: object = None
) -> JSONResponse:
    """`exc`'s `param` and `code`, where it has them, go into OpenAI's form."""
    payload = error_payload(request.url.path, status, message, getattr(exc, "param", None), getattr(exc, "code", None))
    return JSONResponse(payload, status_code=status, headers=headers)


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_answer(request, exc.status_code, exc.detail, exc.headers or None, exc)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_answer(request, 422, "; ".join(parts))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.status_code != 404 else f"no route {cut(request.url.path)}; see /docs for the API"
    return error_answer(request, exc.status_code, str(detail), exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request %s to %s failed", request_id(request), request.url.path, exc_info=exc)
    message = f"internal error; quote request id {request_id(request)} when reporting it"
    return error_answer(request, 500, message, {REQUEST_ID_HEADER: request_id(request)})


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
