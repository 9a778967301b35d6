"""Every error the service answers with, as exceptions that carry their HTTP status and know no transport.

`ServiceError` is the root; `InputError` and its subclasses are the client's mistakes with its input. The
transports render them: `{"detail": ...}` on the native REST routes, `{"error": ...}` under /v2, a status code
and the same text over gRPC.
"""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

Result = TypeVar("Result")
# The most of a client's input an error text quotes: enough to recognise it, never its megabytes back.
QUOTED_CHARACTERS = 100


def cut(text: str, limit: int = QUOTED_CHARACTERS) -> str:
    """`text` as it is, or its first `limit` characters marked as cut."""
    return text if len(text) <= limit else f"{text[:limit]}... (cut: {len(text):,} characters in all)"


def quoted(value: object, limit: int = QUOTED_CHARACTERS) -> str:
    """What the client sent, as Python writes it (`'abc'`, `[1, 2]`), at most `limit` characters of that writing
    and marked where cut, with the size of what was sent: every error text quotes client input through this or
    `cut`."""
    text = repr(value)
    if len(text) <= limit:
        return text
    sizes = {str: "characters", bytes: "bytes", list: "items", tuple: "items", dict: "items"}
    unit = next((name for kind, name in sizes.items() if isinstance(value, kind)), "")
    size = f"{len(value):,} {unit}" if unit else f"{len(text):,} characters written"  # type: ignore[arg-type]
    return f"{text[:limit]}... (cut: {size} in all)"


class ServiceError(Exception):
    """An answer other than success, with the HTTP status that says what kind."""

    status_code = 500
    headers: dict[str, str] = {}  # noqa: RUF012  (read only: what the HTTP answer carries beside its status)

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InputError(ServiceError):
    """The request itself is wrong: its body, its parameters or its images."""

    status_code = 400


class UndecodableInput(InputError):
    status_code = 400


class NotAcceptable(InputError):
    status_code = 406


class TooLarge(InputError):
    status_code = 413


class UnsupportedMediaType(InputError):
    status_code = 415


class InvalidInput(InputError):
    status_code = 422


class NotFound(ServiceError):
    """No such model or version."""

    status_code = 404


class Forbidden(ServiceError):
    """An admin action while no API keys are set."""

    status_code = 403


class RequestTimeout(ServiceError):
    status_code = 408


class NotReady(ServiceError):
    """The model or version is known but not loaded."""

    status_code = 503


class Overloaded(ServiceError):
    """The model's queue is full: refused at once, to be tried again (on another replica, or a moment later).
    HTTP 503 with Retry-After; gRPC UNAVAILABLE."""

    status_code = 503

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_s)}


class LoadFailed(ServiceError):
    """A repository load that did not load what it asked for; nothing served changed."""

    status_code = 400


class NoModelLoaded(RuntimeError):
    """Raised at start-up when not one checkpoint could be loaded."""


async def within_timeout(work: Awaitable[Result], timeout_s: float) -> Result:
    """Await `work` (reading the body included), or refuse with 408 once `timeout_s` has passed."""
    try:
        async with asyncio.timeout(timeout_s):
            return await work
    except TimeoutError:
        raise RequestTimeout(
            f"request not completed within {timeout_s:g} s (SAE_REQUEST_TIMEOUT_S): "
            "the body arrived too slowly or the service is overloaded; retry, or send fewer images"
        ) from None
