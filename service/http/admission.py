"""The front door of the REST app: a request to a model that is at capacity is refused before any routing,
dependency, body or log line is spent on it, so that refusing stays cheap under overload.

The inference routes name their model in the path (/v2/models/{name}[/versions/{v}]/infer) or in the query
(/classify, /reconstruct, /embed, /similar: `model=`, else the default model; /v1/embeddings names it in its body,
and is left to the batchers). Where that model already has its bound's images
pending in this worker (service.core.batching), and the caller has a valid key where keys are set, the answer is 503
with Retry-After, in the route's error form, counted in sae_requests_total and sae_queue_refusals_total; the log
gets one line a second at most, with how many were refused. Everything else, and every request the model has room
for, goes on to the app, where the batchers check again (the authoritative check: the model may fill while a body
is read).
"""

import logging
import time
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.dataplane import DataPlane
from service.core.keys import key_matches, presented_key
from service.core.telemetry import REQUEST_ID_HEADER, request_id_from
from service.http.errors import error_payload

log = logging.getLogger("sae_serve")
NATIVE_ROUTES = frozenset({"/classify", "/reconstruct", "/embed", "/similar"})
LOG_EVERY_S = 1.0


def route_and_model(path: str, query: bytes, default_model: str) -> tuple[str, str] | None:
    """(the route's template, as the router names it in sae_requests_total, and the model it names) for an inference
    route; None for every other path."""
    if path in NATIVE_ROUTES:
        if b"model=" not in query:
            return path, default_model
        named = parse_qs(query.decode("latin-1")).get("model")
        return path, (named[-1] if named else default_model)
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path.split("/")  # ['', 'v2', 'models', name, 'infer'] or [..., name, 'versions', v, 'infer']
        if len(parts) == 5:
            return "/v2/models/{name}/infer", parts[3]  # ASGI's path is already percent-decoded
        if len(parts) == 7 and parts[4] == "versions":
            return "/v2/models/{name}/versions/{version}/infer", parts[3]
    return None


class FrontDoor:
    def __init__(self, app: ASGIApp, plane: DataPlane) -> None:
        self.app = app
        self.plane = plane
        self.keys = [key.encode() for key in plane.settings.api_keys]
        self.refused_since_log = 0
        self.last_log = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = route_and_model(scope["path"], scope["query_string"], self.plane.settings.default_model)
            if found is not None and self.plane.at_capacity(found[1]) and self.authorised(scope):
                await self.refuse(scope, send, *found)
                return
        await self.app(scope, receive, send)

    def authorised(self, scope: Scope) -> bool:
        """Whether the request carries a valid key, where keys are set: a caller without one learns nothing of the
        models' load, and gets its 401 from the app."""
        if not self.keys:
            return True
        key = presented_key(dict(scope["headers"]))
        return key is not None and key_matches(key, self.keys)

    async def refuse(self, scope: Scope, send: Send, route: str, model: str) -> None:
        refusal = self.plane.batchers.refusal(model)
        self.plane.metrics.requests.labels(route, model, "503").inc()
        body = orjson.dumps(error_payload(route, refusal.status_code, refusal.detail))
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER.encode()), b"")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in refusal.headers.items()),
            (REQUEST_ID_HEADER.encode(), request_id_from(given.decode("latin-1")).encode("latin-1")),
        ]
        await send({"type": "http.response.start", "status": refusal.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.refused_since_log += 1
        now = time.monotonic()
        if now - self.last_log >= LOG_EVERY_S:
            log.warning(
                "at capacity: refused %d requests since the last such line (latest: %s)", self.refused_since_log, model
            )
            self.refused_since_log, self.last_log = 0, now
