"""The app of one process: a data plane with its transports on one event loop, REST always and gRPC on
SAE_GRPC_PORT (0: off)."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.core.dataplane import DataPlane
from service.core.repository import Peers
from service.core.settings import Settings, get_settings
from service.http.rest_app import rest_app


def create_app(
    settings: Settings | None = None,
    peers: Peers | None = None,
    on_serving: Callable[[DataPlane], None] | None = None,
) -> FastAPI:
    """The ASGI app of one process; its lifespan loads the models, calls `on_serving` (service.workers: the
    process's signals), then starts gRPC beside the REST routes. `peers`: the other workers of this server."""
    plane = DataPlane(settings or get_settings(), peers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with plane.serving():
            if on_serving is not None:
                on_serving(plane)
            if not plane.settings.grpc_port:
                yield
                return
            # Imported here: the supervisor imports this module before it forks its workers, and gRPC's core
            # must not be initialised in a process that forks.
            from service.grpc.server import serving_grpc

            async with serving_grpc(plane):  # stopped first: its calls in flight still need the batchers
                yield

    return rest_app(plane, lifespan)
