"""The FastAPI application: lifespan model loading, request ids, error handling, routers."""

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from models.checkpoint import CARD_FILE, WEIGHTS_FILE
from service.errors import NoModelLoaded, add_error_handlers
from service.inputs import Limits
from service.microbatching import ModelBatchers
from service.observability import AccessMiddleware, Metrics
from service.registry import ModelStore
from service.routes import admin, demo, inference, meta, repository, v2
from service.routes.docs import add_docs
from service.security import ApiKeyMiddleware
from service.settings import Settings, get_settings
from service.versions import Policies

if TYPE_CHECKING:
    from service.grpc_server import GrpcServer

log = logging.getLogger("sae_serve")


def watch_sighup(app: FastAPI) -> None:
    """SIGHUP reloads the models, where the server runs in the main thread (as `sae-serve` does)."""
    if not app.state.settings.reload_on_sighup:
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def on_sighup() -> None:
        task = loop.create_task(app.state.store.reload())
        tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (RuntimeError, ValueError, NotImplementedError):
        log.info("SIGHUP reloading is off: the server does not run in the main thread")


def watch_repository_changes(app: FastAPI) -> None:
    """With several workers, SIGUSR1 from the supervisor: another worker changed the model repository."""
    if app.state.store.workers.state_file is None:
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def on_sigusr1() -> None:
        task = loop.create_task(app.state.store.sync())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, on_sigusr1)


async def start_grpc(app: FastAPI) -> "GrpcServer":
    """The gRPC server of this process (SAE_GRPC_PORT), on the app's event loop."""
    # Imported here, not at the top: the supervisor imports this module before it forks its workers, and gRPC
    # must not be initialised in a process that forks.
    from service.grpc_server import start_grpc_server

    return await start_grpc_server(app)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = app.state.store.load()
        if not registry.ready:
            reasons = "; ".join(f"{name}: {why}" for name, why in registry.failures.items())
            reasons = reasons or f"it holds no checkpoint folder (<name>/{CARD_FILE} and <name>/{WEIGHTS_FILE})"
            log.critical("no model could be loaded from %s (%s); not starting", settings.artifacts_dir, reasons)
            raise NoModelLoaded(f"no model could be loaded from {settings.artifacts_dir}: {reasons}")
        app.state.batchers = ModelBatchers(settings, app.state.metrics.batch_observer)
        grpc_server = await start_grpc(app) if settings.grpc_port else None
        watch_sighup(app)
        watch_repository_changes(app)
        yield
        if grpc_server is not None:
            await grpc_server.stop()  # its calls in flight still need the batchers
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
    app.state.store = ModelStore(settings.artifacts_dir, settings.device, Policies.parse(settings.version_policy))
    app.state.metrics = Metrics()
    app.add_middleware(
        ApiKeyMiddleware,
        keys=settings.api_keys,
        docs_public=settings.docs_public,
        metrics_public=settings.metrics_public,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Reconstruction-Error", "X-Image-Count", "X-Model-Version"],
        )
    app.add_middleware(AccessMiddleware, metrics=app.state.metrics)  # outermost: every answer is counted and logged
    add_error_handlers(app)
    app.include_router(inference.router)
    app.include_router(meta.router)
    app.include_router(admin.router)
    app.include_router(v2.router)
    app.include_router(repository.router)
    app.include_router(demo.router)
    add_docs(app)
    return app
