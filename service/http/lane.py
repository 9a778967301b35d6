"""The fast lane: POST /classify, /reconstruct, /embed, /similar and /v1/embeddings go straight to their route
functions.

Those routes take only the request (they validate their query themselves: service.http.deps.inference_query), so
FastAPI's exception middleware, exit stack, router, route wrapper and dependency solving add nothing to them but
time: about a fifth of a request's CPU time at 64 connections (bench/serving/profile_request.py, docs/benchmarks.md).
This middleware, the innermost of the app's own, calls the route function itself and renders its errors with the
app's one set of handlers (service.http.errors), so the answers are the same byte for byte; the keys, request ids,
metrics and logs of the middleware around it apply as to every route. Every other request goes on to FastAPI.
"""

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.errors import render_error

Endpoint = Callable[[Request], Awaitable[Response]]


class FastLane:
    def __init__(self, app: ASGIApp, routers: list[APIRouter]) -> None:
        self.app = app
        # The routers' POST routes that take nothing but the request: the path, its route (for the metrics' route
        # label) and its function.
        self.routes: dict[str, tuple[APIRoute, Endpoint]] = {
            route.path: (route, route.endpoint)
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.methods == {"POST"} and takes_only_the_request(route)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, endpoint = found
        scope["route"] = route
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:  # rendered as FastAPI's handlers render it: a ServiceError's status, else a 500
            response = await render_error(request, exc)
        await response(scope, receive, send)


def takes_only_the_request(route: APIRoute) -> bool:
    dependant = route.dependant
    parameters = (dependant.path_params, dependant.query_params, dependant.header_params, dependant.cookie_params)
    no_parameters = not any(parameters) and not dependant.body_params and not dependant.dependencies
    return no_parameters and dependant.request_param_name is not None
