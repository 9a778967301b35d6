"""Client mistakes as exceptions that carry their HTTP status, raised by decoding code that knows no HTTP."""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

Result = TypeVar("Result")


class InputError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UndecodableInput(InputError):
    status_code = 400


class NotFound(InputError):
    status_code = 404


class RequestTimeout(InputError):
    status_code = 408


class TooLarge(InputError):
    status_code = 413


class UnsupportedMediaType(InputError):
    status_code = 415


class InvalidInput(InputError):
    status_code = 422


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
