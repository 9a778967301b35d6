"""The FastAPI application over a data plane: request ids, API keys, CORS, error handling, routers."""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import __version__
from service.core.dataplane import DataPlane
from service.http import admin, demo, meta, native, neighbours, oip, openai_api, repository
from service.http.admission import FrontDoor
from service.http.deps import attach
from service.http.docs import add_docs
from service.http.errors import add_error_handlers
from service.http.lane import FastLane
from service.http.middleware import AccessMiddleware, ApiKeyMiddleware

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def rest_app(plane: DataPlane, lifespan: Lifespan) -> FastAPI:
    """The REST transports over `plane`; `lifespan` starts and stops what the process serves (service.app)."""
    settings = plane.settings
    app = FastAPI(
        title="sae-serve",
        summary="Stacked-autoencoder classifiers for MNIST and Fashion-MNIST: classify, reconstruct, embed.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by service.http.docs, with no CDN
        redoc_url=None,
    )
    attach(app, plane)
    # The innermost of these: inside the keys, ids and metrics.
    app.add_middleware(FastLane, routers=[native.router, neighbours.router, openai_api.router])
    app.add_middleware(
        ApiKeyMiddleware,
        keys=settings.api_keys,
        docs_public=settings.docs_public,
        metrics_public=settings.metrics_public,
    )
    app.add_middleware(AccessMiddleware, metrics=plane.metrics)  # every answer is counted and logged
    app.add_middleware(FrontDoor, plane=plane)  # a model at capacity refuses before anything else is spent
    if settings.cors_origins:  # outermost, so that a refusal carries its headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "X-Reconstruction-Error",
                "X-Image-Count",
                "X-Model-Version",
                "X-OOD-Score",
                "X-In-Distribution",
                "Retry-After",
                "X-Label",
                "X-Class-Name",
            ],
        )
    add_error_handlers(app)
    for routes in (native, neighbours, openai_api, meta, admin, oip, repository, demo):
        app.include_router(routes.router)
    add_docs(app)
    return app
