"""The ASGI middleware: an id, a metric and an access line for every request; API keys checked before any route."""

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.keys import key_matches, presented_key
from service.core.telemetry import REQUEST_ID_HEADER, ServiceMetrics, log_access, request_id_from
from service.core.timing import decode_seconds, forward_timing, server_timing
from service.http.errors import error_payload

OPEN_PATHS = frozenset({"/", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Swagger UI's and ReDoc's scripts, styles and icon: public files, open to all.
DOCS_ASSETS_PREFIX = "/docs-assets/"


class AccessMiddleware:
    """Take the client's X-Request-ID (or make one) and return it; count, time and log every request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                name = REQUEST_ID_HEADER.lower().encode()
                if not any(key.lower() == name for key, _ in headers):  # a 500 names it already
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")))
                timing = server_timing(decode_seconds.get(), forward_timing.get())
                if timing is not None:
                    headers.append((b"server-timing", timing.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")  # the template, never the raw path
            model = str(state.get("model", "-"))
            self.metrics.requests.labels(route, model, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log_access(request_id, scope["method"], route, model, status, seconds)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[str], docs_public: bool, metrics_public: bool) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.open_paths = (
            OPEN_PATHS
            | (DOCS_PATHS if docs_public else frozenset())
            | ({"/metrics"} if metrics_public else frozenset())
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or scope["path"] in self.open_paths
            or scope["path"].startswith(DOCS_ASSETS_PREFIX)
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        key = presented_key(dict(scope["headers"]))
        if key is None:
            detail = "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        elif not key_matches(key, self.keys):
            detail = "invalid API key"
        else:
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_payload(scope["path"], 401, detail)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
