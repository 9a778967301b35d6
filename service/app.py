"""The FastAPI application: lifespan model loading, request ids, error handling, routers."""

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models import resolve_device
from service.batchers import Batchers
from service.errors import InputError
from service.inputs import Limits
from service.observability import REQUEST_ID_HEADER, AccessMiddleware, Metrics
from service.registry import Registry, load_models, reload_registry
from service.routes import admin, demo, inference, meta, v2
from service.routes.docs import add_docs
from service.security import ApiKeyMiddleware
from service.settings import Settings, get_settings, split_list

log = logging.getLogger("sae_serve")


class NoModelLoaded(RuntimeError):
    """Raised at start-up when not one checkpoint could be loaded."""


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_body(request: Request, message: str) -> dict[str, str]:
    """The Open Inference Protocol's error form on its routes, the native `detail` everywhere else."""
    on_protocol = request.url.path == v2.PREFIX or request.url.path.startswith(f"{v2.PREFIX}/")
    return {"error": message} if on_protocol else {"detail": message}


async def input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return JSONResponse(error_body(request, exc.detail), status_code=exc.status_code)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse(error_body(request, "; ".join(parts)), status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request %s to %s failed", request_id(request), request.url.path, exc_info=exc)
    return JSONResponse(
        error_body(request, f"internal error; quote request id {request_id(request)} when reporting it"),
        status_code=500,
        headers={REQUEST_ID_HEADER: request_id(request)},
    )


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.status_code != 404 else f"no route {request.url.path}; see /docs for the API"
    return JSONResponse(error_body(request, str(detail)), status_code=exc.status_code, headers=exc.headers)


def watch_sighup(app: FastAPI) -> None:
    """SIGHUP reloads the models, where the server runs in the main thread (as `sae-serve` does)."""
    if not app.state.settings.reload_on_sighup:
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reload_registry(app.state))
        tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (RuntimeError, ValueError, NotImplementedError):
        log.info("SIGHUP reloading is off: the server does not run in the main thread")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        device = resolve_device(settings.device)
        registry: Registry = load_models(settings.artifacts_dir, device)
        if not registry.ready:
            reasons = "; ".join(f"{name}: {why}" for name, why in registry.failures.items())
            log.critical("no model could be loaded from %s (%s); not starting", settings.artifacts_dir, reasons)
            raise NoModelLoaded(f"no model could be loaded from {settings.artifacts_dir}: {reasons}")
        app.state.registry = registry
        app.state.batchers = Batchers(settings, app.state.metrics.batch_observer)
        watch_sighup(app)
        yield
        await app.state.batchers.close()

    app = FastAPI(
        title="sae-serve",
        summary="Stacked-autoencoder classifiers for MNIST and Fashion-MNIST: classify, reconstruct, embed.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by service.routes.docs, with no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.limits = Limits(
        settings.max_upload_bytes,
        settings.max_batch_images,
        settings.max_image_pixels,
        settings.max_json_bytes,
        settings.max_json_depth,
    )
    app.state.registry = Registry()
    app.state.metrics = Metrics()
    app.add_middleware(
        ApiKeyMiddleware,
        keys=split_list(settings.api_keys),
        docs_public=settings.docs_public,
        metrics_public=settings.metrics_public,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=split_list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Reconstruction-Error", "X-Image-Count"],
        )
    app.add_middleware(AccessMiddleware, metrics=app.state.metrics)  # outermost: every answer is counted and logged
    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(inference.router)
    app.include_router(meta.router)
    app.include_router(admin.router)
    app.include_router(v2.router)
    app.include_router(demo.router)
    add_docs(app)
    return app
