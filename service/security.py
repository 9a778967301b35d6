"""Optional API keys, checked in constant time before any route runs."""

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Swagger UI's and ReDoc's scripts, styles and icon: public files, open to all.
DOCS_ASSETS_PREFIX = "/docs-assets/"


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    authorization = headers.get(b"authorization", b"")
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key") or None


def key_matches(key: bytes, keys: list[bytes]) -> bool:
    matched = False
    for candidate in keys:  # every key is compared, so timing does not tell which one, or how close
        matched |= hmac.compare_digest(key, candidate)
    return matched


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
        body = json.dumps({"detail": detail}).encode()
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
